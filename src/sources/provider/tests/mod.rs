//! Declarative providers against a loopback fake that speaks Hunter's, People Data Labs' and Apollo's
//! documented formats, configured from `examples/providers.toml` itself.

mod fake;

use std::collections::HashMap;
use std::time::Duration;

use self::fake::{APOLLO_KEY, Fake, HUNTER_KEY, PDL_KEY, fake};
use super::*;
use crate::config::Config;
use crate::domain::{DomainName, Email, Identifier, PersonName};
use crate::profile::Field;

const EXAMPLES: &str = include_str!("../../../../examples/providers.toml");
fn keys(var: &str) -> Option<String> {
    match var {
        "HUNTER_API_KEY" => Some(HUNTER_KEY.into()),
        "PDL_API_KEY" => Some(PDL_KEY.into()),
        "APOLLO_API_KEY" => Some(APOLLO_KEY.into()),
        _ => None,
    }
}

/// The shipped examples, pointed at the fake and switched on.
fn examples_at(base: &str) -> Vec<ProviderConfig> {
    let text = EXAMPLES
        .replace("https://api.hunter.io", base)
        .replace("https://api.peopledatalabs.com", base)
        .replace("https://api.apollo.io", base);
    let mut cfgs = Config::from_toml(&text, &[])
        .expect("examples parse")
        .config
        .providers;
    for c in &mut cfgs {
        c.enabled = true;
    }
    cfgs
}

async fn providers() -> (Fake, HashMap<String, ProviderSource>) {
    let fake = fake().await;
    let built = build_providers(&examples_at(&fake.base), reqwest::Client::new(), &keys)
        .expect("examples build");
    let by_name = built.into_iter().map(|p| (p.name.clone(), p)).collect();
    (fake, by_name)
}

fn email(s: &str) -> Identifier {
    Identifier::Email(Email::parse(s).expect("test email"))
}

fn name_at(name: &str, domain: &str) -> Identifier {
    Identifier::NameAtDomain(
        PersonName::parse(name).expect("name"),
        DomainName::parse(domain).expect("domain"),
    )
}

fn values(obs: &[Observation], field: Field) -> Vec<String> {
    obs.iter()
        .filter(|o| o.field == field)
        .map(|o| o.value.to_string())
        .collect()
}

#[test]
fn shipped_examples_load_through_the_config_parser_and_stay_disabled() {
    let loaded =
        Config::from_toml(EXAMPLES, &[]).expect("examples/providers.toml is a valid config");
    let built = build_providers(&loaded.config.providers, reqwest::Client::new(), &|_| None)
        .expect("examples build");

    let names: Vec<&str> = built.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "hunter_email_finder",
            "hunter_person",
            "pdl_person",
            "pdl_person_by_phone",
            "pdl_person_by_profile",
            "pdl_person_by_name",
            "apollo_match",
            "apollo_match_by_name"
        ]
    );
    assert!(built.iter().all(|p| p.paid && !p.is_active()));
    assert!(
        built
            .iter()
            .all(|p| p.disabled.as_deref() == Some("enabled = false"))
    );
}

#[test]
fn a_missing_key_disables_the_provider_with_the_reason() {
    let mut cfgs = examples_at("http://127.0.0.1:9");
    cfgs.truncate(1);

    let built = build_providers(&cfgs, reqwest::Client::new(), &|_| None).expect("builds");

    let reason = built[0].disabled.as_deref().expect("disabled");
    assert!(reason.contains("HUNTER_API_KEY"), "{reason}");
}

#[tokio::test]
async fn hunter_email_finder_hit_maps_documented_fields_and_sends_the_key() {
    let (fake, p) = providers().await;
    let finder = &p["hunter_email_finder"];
    assert!(finder.is_active());

    let obs = finder
        .source
        .lookup(&name_at("Ada Lovelace", "engines.example"))
        .await
        .expect("hit");

    assert_eq!(values(&obs, Field::Email), ["ada.lovelace@engines.example"]);
    assert_eq!(values(&obs, Field::JobTitle), ["Analyst"]);
    assert_eq!(values(&obs, Field::CompanyName), ["Analytical Engines"]);
    assert_eq!(values(&obs, Field::CompanyDomain), ["engines.example"]);
    assert_eq!(values(&obs, Field::Phone), ["+442079460958"]);
    assert_eq!(
        values(&obs, Field::Profile),
        ["https://linkedin.com/in/ada-lovelace", "https://x.com/ada"]
    );
    assert_eq!(
        fake.seen.keys("hunter_email_finder"),
        [Some(HUNTER_KEY.to_string())]
    );
}

#[tokio::test]
async fn hunter_status_answers_map_to_source_outcomes() {
    let (_fake, p) = providers().await;
    let finder = &p["hunter_email_finder"].source;

    type Check = fn(&Result<Vec<Observation>, SourceError>) -> bool;
    let cases: [(&str, Check); 6] = [
        ("Ada Missing", |r| matches!(r, Ok(v) if v.is_empty())),
        ("Ada Objected", |r| matches!(r, Err(SourceError::Objected))),
        (
            "Ada Broke",
            |r| matches!(r, Err(SourceError::RateLimited { retry_after: Some(d) }) if *d == OUT_OF_CREDITS_PAUSE),
        ),
        (
            "Ada Busy",
            |r| matches!(r, Err(SourceError::RateLimited { retry_after: Some(d) }) if *d == Duration::from_secs(7)),
        ),
        ("Ada Garbage", |r| {
            matches!(r, Err(SourceError::Malformed(_)))
        }),
        ("Ada Crash", |r| {
            matches!(r, Err(SourceError::Status { status: 500 }))
        }),
    ];
    for (name, expected) in cases {
        let r = finder.lookup(&name_at(name, "engines.example")).await;
        assert!(expected(&r), "{name}: {r:?}");
    }
}

#[tokio::test]
async fn hunter_person_reads_nested_fields_and_withholds_objections() {
    let (_fake, p) = providers().await;
    let person = &p["hunter_person"].source;

    let obs = person
        .lookup(&email("ada@engines.example"))
        .await
        .expect("hit");
    let objected = person.lookup(&email("claimed@engines.example")).await;

    assert_eq!(values(&obs, Field::FullName), ["Ada Lovelace"]);
    assert_eq!(values(&obs, Field::JobTitle), ["Analyst"]);
    assert_eq!(
        values(&obs, Field::Location),
        ["London, England, United Kingdom"]
    );
    assert_eq!(
        values(&obs, Field::Photo),
        ["https://images.example/ada.png"]
    );
    assert!(
        values(&obs, Field::Profile)
            .iter()
            .any(|v| v == "https://linkedin.com/in/ada-lovelace")
    );
    assert!(
        values(&obs, Field::Phone).is_empty(),
        "a null phone is no value"
    );
    assert!(
        matches!(objected, Err(SourceError::Objected)),
        "{objected:?}"
    );
}

#[tokio::test]
async fn pdl_person_reads_scalars_and_arrays_and_404_is_a_miss() {
    let (fake, p) = providers().await;
    let pdl = &p["pdl_person"].source;

    let obs = pdl
        .lookup(&email("ada@engines.example"))
        .await
        .expect("hit");
    let miss = pdl
        .lookup(&email("nobody@engines.example"))
        .await
        .expect("miss");

    assert_eq!(
        values(&obs, Field::Email),
        ["ada@engines.example", "ada.l@mail.example"]
    );
    assert_eq!(values(&obs, Field::Phone), ["+442079460958"]);
    assert_eq!(values(&obs, Field::CompanyDomain), ["engines.example"]);
    assert!(
        values(&obs, Field::Profile)
            .iter()
            .any(|v| v == "https://x.com/ada")
    );
    assert!(miss.is_empty());
    assert_eq!(fake.seen.keys("pdl_person")[0].as_deref(), Some(PDL_KEY));
}

#[tokio::test]
async fn apollo_match_posts_and_a_null_person_is_a_miss() {
    let (fake, p) = providers().await;
    let apollo = &p["apollo_match"].source;

    let obs = apollo
        .lookup(&email("ada@engines.example"))
        .await
        .expect("hit");
    let miss = apollo
        .lookup(&email("nobody@engines.example"))
        .await
        .expect("miss");

    assert_eq!(values(&obs, Field::FullName), ["Ada Lovelace"]);
    assert_eq!(values(&obs, Field::CompanyName), ["Analytical Engines"]);
    assert_eq!(
        values(&obs, Field::Profile),
        [
            "https://linkedin.com/in/ada-lovelace",
            "https://github.com/ada"
        ]
    );
    assert!(miss.is_empty());
    assert_eq!(
        fake.seen.keys("apollo_match")[0].as_deref(),
        Some(APOLLO_KEY)
    );
}

#[test]
fn providers_accept_only_identifiers_that_fill_their_placeholders() {
    let built = build_providers(
        &examples_at("http://127.0.0.1:9"),
        reqwest::Client::new(),
        &keys,
    )
    .expect("builds");
    let by_name: HashMap<&str, &ProviderSource> =
        built.iter().map(|p| (p.name.as_str(), p)).collect();
    let an_email = email("ada@engines.example");
    let a_name = name_at("Ada Lovelace", "engines.example");
    let one_word = name_at("Ada", "engines.example");

    assert!(!by_name["hunter_email_finder"].source.accepts(&an_email));
    assert!(by_name["hunter_email_finder"].source.accepts(&a_name));
    assert!(!by_name["hunter_email_finder"].source.accepts(&one_word));
    assert!(by_name["pdl_person"].source.accepts(&an_email));
    assert!(!by_name["pdl_person"].source.accepts(&a_name));
}

#[tokio::test]
async fn a_json_body_template_is_filled_and_posted() {
    let fake = fake().await;
    let toml = format!(
        r#"
        [[providers]]
        name = "custom"
        enabled = true
        url = "{}/custom/search"
        method = "POST"
        body = {{ query = {{ email = "{{email}}" }}, size = 1 }}
        fields = {{ full_name = "/result/name" }}
        "#,
        fake.base
    );
    let cfgs = Config::from_toml(&toml, &[])
        .expect("valid")
        .config
        .providers;
    let built = build_providers(&cfgs, reqwest::Client::new(), &|_| None).expect("builds");

    let obs = built[0]
        .source
        .lookup(&email("ada@engines.example"))
        .await
        .expect("hit");

    assert!(built[0].is_active(), "no auth configured, none needed");
    assert_eq!(values(&obs, Field::FullName), ["Ada Lovelace"]);
}

#[test]
fn keys_never_appear_in_debug_output() {
    let built = build_providers(
        &examples_at("http://127.0.0.1:9"),
        reqwest::Client::new(),
        &keys,
    )
    .expect("builds");
    let debug = format!("{built:?}");
    for key in [HUNTER_KEY, PDL_KEY, APOLLO_KEY] {
        assert!(!debug.contains(key), "{key} leaked");
    }
}

#[test]
fn invalid_entries_are_refused_naming_the_provider_and_key() {
    let entry = |extra: &str| {
        format!(
            "[[providers]]\nname = \"acme\"\nurl = \"https://api.acme.example/p?e={{email}}\"\n\
             fields = {{ email = \"/email\" }}\n{extra}"
        )
    };
    // (config text, text the error must hold, whether the error names the provider: serde's own
    // messages for unknown keys and values do not know which entry they are in, but name the key)
    let cases = [
        (entry("colour = \"red\"\n"), "colour", false),
        (
            entry("status = { \"404\" = \"ignore\" }\n"),
            "ignore",
            false,
        ),
        (entry("auth_header = \"X-Key\"\n"), "auth_env", true),
        (entry("status = { \"abc\" = \"miss\" }\n"), "status", true),
        (entry("weight = 1.5\n"), "weight", true),
        (
            entry("method = \"POST\"\nbody = \"{not json\"\n"),
            "body",
            true,
        ),
        (entry("body = { a = 1 }\n"), "body", true),
        (
            entry("").replace("api.acme.example", "{domain}"),
            "host",
            true,
        ),
        (entry("").replace("{email}", "{mail}"), "{mail}", true),
        (entry("").replace("{email}", "x"), "no placeholder", true),
        (format!("{}{}", entry(""), entry("")), "more than one", true),
    ];
    for (toml, needle, names_provider) in cases {
        let err = Config::from_toml(&toml, &[]).expect_err(needle).to_string();
        assert!(err.contains(needle), "expected '{needle}' in: {err}");
        assert!(
            !names_provider || err.contains("'acme'"),
            "error does not name the provider: {err}"
        );
    }
    let builtin = entry("").replace("\"acme\"", "\"gravatar\"");
    let err = Config::from_toml(&builtin, &[])
        .expect_err("built-in name")
        .to_string();
    assert!(
        err.contains("'gravatar'") && err.contains("built-in"),
        "{err}"
    );
}
