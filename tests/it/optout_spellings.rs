//! Property: once one spelling of an identifier is opted out, every spelling of it is a miss that asks
//! no upstream, answers that merely contain it are withheld (JSON and NDJSON), and no response, stream
//! event, log line or file under the data directory carries it.

use proptest::prelude::*;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Server, Upstreams, captured_logs, grep_dir, metric};

/// One generated person. Every token starts with `zq` so it cannot occur by chance in hex or in the
/// other tests' data.
#[derive(Debug, Clone)]
struct Person {
    first: String,
    last: String,
    login: String,
    slug: String,
    phone_tail: u16,
    tag: String,
    /// Bits choosing upper or lower case, letter by letter.
    case_bits: u64,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Email,
    Phone,
    Github,
    Linkedin,
}

fn person() -> impl Strategy<Value = Person> {
    (
        "zq[a-z]{3,6}",
        "zq[a-z]{3,6}",
        "zq[a-z]{4,8}",
        "zq[a-z]{3,6}-[a-z]{2,5}",
        0u16..1000,
        "[a-z]{1,5}",
        any::<u64>(),
    )
        .prop_map(
            |(first, last, login, slug, phone_tail, tag, case_bits)| Person {
                first,
                last,
                login,
                slug,
                phone_tail,
                tag,
                case_bits,
            },
        )
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Email),
        Just(Kind::Phone),
        Just(Kind::Github),
        Just(Kind::Linkedin)
    ]
}

/// `s` with letters upper-cased where `bits` says so.
fn mixed(s: &str, bits: u64) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if bits >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

impl Person {
    /// The address the upstream knows.
    fn email(&self) -> String {
        format!("{}.{}@gmail.com", self.first, self.last)
    }

    fn work_email(&self) -> String {
        format!("{}@{}-works.example", self.first, self.login)
    }

    /// The last four digits, after `+44 20 7946 `: `0` then three digits.
    fn local(&self) -> String {
        format!("0{:03}", self.phone_tail)
    }

    fn spellings(&self, kind: Kind) -> Vec<String> {
        let (f, l, b) = (&self.first, &self.last, self.case_bits);
        let n = self.local();
        match kind {
            Kind::Email => vec![
                format!("{f}.{l}@gmail.com"),
                format!("{}.{}@Gmail.com", upper_first(f), upper_first(l)),
                format!("  {f}{l}+{}@gmail.com ", self.tag),
                format!("{}.{}.{l}@googlemail.com", &f[..1], &f[1..]),
                format!("mailto:{}+x@GOOGLEMAIL.COM", mixed(&format!("{f}.{l}"), b)),
                mixed(&format!("{f}.{l}@gmail.com"), b.rotate_left(7)),
            ],
            Kind::Phone => vec![
                format!("+44 20 7946 {n}"),
                format!("+44207946{n}"),
                format!("0044 20 7946 {n}"),
                format!("020 7946 {n}"),
                format!("+44 (0)20 7946 {n}"),
                format!("(020) 7946-{n}"),
            ],
            Kind::Github => {
                let g = &self.login;
                vec![
                    format!("https://github.com/{g}"),
                    format!("http://www.github.com/{}/", upper_first(g)),
                    format!("github.com/{}?tab=repositories", g.to_uppercase()),
                    format!("https://github.com/{g}#top"),
                    format!("HTTPS://GITHUB.COM/{}/", mixed(g, b)),
                    format!("  www.github.com/{g}  "),
                ]
            }
            Kind::Linkedin => {
                let s = &self.slug;
                vec![
                    format!("https://www.linkedin.com/in/{s}/"),
                    format!("https://uk.linkedin.com/in/{}", upper_first(s)),
                    format!("linkedin.com/in/{}?trk=public_profile", s.to_uppercase()),
                    format!("http://fr.linkedin.com/pub/{s}#experience"),
                    format!(
                        "https://LinkedIn.com/in/{}/?originalSubdomain=uk",
                        mixed(s, b)
                    ),
                    format!("de.linkedin.com/in/{s}"),
                ]
            }
        }
    }

    fn field(kind: Kind) -> &'static str {
        match kind {
            Kind::Email => "email",
            Kind::Phone => "phone",
            Kind::Github | Kind::Linkedin => "profile_url",
        }
    }

    /// What must never show up anywhere: the distinctive tokens and every spelling.
    fn needles(&self) -> Vec<String> {
        let mut out = vec![
            self.first.clone(),
            self.last.clone(),
            self.login.clone(),
            self.slug.clone(),
            format!("7946{}", self.local()),
            format!("7946 {}", self.local()),
        ];
        for kind in [Kind::Email, Kind::Phone, Kind::Github, Kind::Linkedin] {
            out.extend(self.spellings(kind).iter().map(|s| s.trim().to_string()));
        }
        out
    }
}

/// The upstreams know the person under every spelling of their address (a Gravatar profile with
/// contact info and verified accounts), and a colleague whose answer holds the opted-out identifier.
fn arrange(up: &Upstreams, p: &Person, kind: Kind, carrier: &str) {
    let github = format!("https://github.com/{}", p.login);
    let linkedin = format!("https://www.linkedin.com/in/{}", p.slug);
    let phone = format!("+44 20 7946 {}", p.local());
    let name = format!("{} {}", upper_first(&p.first), upper_first(&p.last));
    for spelling in p.spellings(Kind::Email) {
        up.gravatar_contact(
            spelling.trim().trim_start_matches("mailto:"),
            &name,
            &[&phone],
            Some(&p.work_email()),
            &[&github, &linkedin],
        );
    }
    up.github.on(
        &format!("/users/{}", p.login),
        Upstreams::github_user_doc(&p.login, &name, "Works"),
    );
    let (phones, email, accounts): (Vec<&str>, Option<String>, Vec<&str>) = match kind {
        Kind::Email => (vec![], Some(p.email()), vec![]),
        Kind::Phone => (vec![&phone], None, vec![]),
        Kind::Github => (vec![], None, vec![&github]),
        Kind::Linkedin => (vec![], None, vec![&linkedin]),
    };
    up.gravatar_contact(
        carrier,
        "Carrier Person",
        &phones,
        email.as_deref(),
        &accounts,
    );
}

async fn lookup_text(server: &Server, body: &Value, accept: &str) -> (u16, String) {
    let resp = server
        .post("/v1/lookup")
        .header("accept", accept)
        .json(body)
        .send()
        .await
        .expect("lookup");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

async fn check(p: Person, kind: Kind, pick: usize, via_form: bool) {
    let up = Upstreams::start().await;
    let carrier = format!("carrier.{}@example.org", p.login.replace("zq", "cz"));
    arrange(&up, &p, kind, &carrier);
    let server = Server::start(&format!(
        "{}\n[lookup]\ndefault_region = \"GB\"\n",
        up.config()
    ))
    .await;
    let spellings = p.spellings(kind);
    let chosen = &spellings[pick % spellings.len()];
    let mut seen = Vec::new();

    let field = Person::field(kind);
    let status = if via_form {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair(field, chosen)
            .finish();
        let resp = server
            .anon(Method::POST, "/optout")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("form");
        let status = resp.status().as_u16();
        seen.push(resp.text().await.expect("html"));
        status
    } else {
        let resp = server
            .anon(Method::POST, "/v1/optout")
            .json(&json!({ field: chosen }))
            .send()
            .await
            .expect("optout");
        let status = resp.status().as_u16();
        seen.push(resp.text().await.expect("json"));
        status
    };
    assert_eq!(status, 200, "opt-out by {chosen:?}: {}", seen[0]);

    // Opting out by email expands to the accounts Gravatar verified for it (not the contact
    // details typed into the profile).
    let blocked: Vec<Kind> = match kind {
        Kind::Email => vec![Kind::Email, Kind::Github, Kind::Linkedin],
        other => vec![other],
    };
    let hits = up.total_hits();
    let mut lookups = 0;
    for k in &blocked {
        for spelling in p.spellings(*k) {
            let body = json!({ Person::field(*k): spelling });
            let (status, text) = lookup_text(&server, &body, "application/json").await;
            let v: Value = serde_json::from_str(&text).expect("json");
            assert_eq!(status, 200, "{spelling:?}");
            assert_eq!(
                v["found"], false,
                "{spelling:?} after opting out {chosen:?}"
            );
            assert_eq!(v["profile"], Value::Null);
            seen.push(text);
            lookups += 1;
        }
    }
    assert_eq!(
        up.total_hits(),
        hits,
        "an excluded spelling reached an upstream"
    );

    // The colleague's answer holds the opted-out identifier: withheld, in JSON and in the stream.
    for accept in ["application/json", "application/x-ndjson"] {
        let (status, text) = lookup_text(&server, &json!({"email": carrier}), accept).await;
        assert_eq!(status, 200);
        let result: Value =
            serde_json::from_str(text.lines().last().expect("a line")).expect("json");
        assert_eq!(result["found"], false, "carrier holding {kind:?}: {text}");
        assert!(!text.contains("Carrier Person"), "{text}");
        seen.push(text);
        lookups += 1;
    }
    let metrics = server.metrics().await;
    assert_eq!(
        metric(&metrics, r#"enrichd_lookups_total{outcome="miss"}"#),
        lookups,
        "an excluded person's lookup counts as a miss"
    );
    assert!(!metrics.contains(r#"outcome="excluded""#), "{metrics}");
    seen.push(metrics);

    let needles = p.needles();
    for text in &seen {
        let lower = text.to_lowercase();
        for n in &needles {
            assert!(
                !lower.contains(&n.to_lowercase()),
                "a response carries {n:?}"
            );
        }
    }
    let in_files = grep_dir(server.data_dir.path(), &needles);
    assert!(in_files.is_empty(), "in the data dir: {in_files:?}");
    let logs = captured_logs().to_lowercase();
    for n in &needles {
        assert!(
            !logs.contains(&n.to_lowercase()),
            "a log line carries {n:?}"
        );
    }
    server.stop().await;
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 12,
        max_shrink_iters: 16,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn an_opted_out_identifier_is_blocked_in_every_spelling_and_leaks_nowhere(
        p in person(),
        kind in kind(),
        pick in 0usize..6,
        via_form in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(check(p, kind, pick, via_form));
    }
}
