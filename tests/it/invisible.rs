//! An excluded person is invisible: with every default source on (loopback fakes that speak the real
//! APIs, a nameserver included), the same query shapes for people nobody knows and for people who
//! opted out give the same answers field by field (latencies masked), the same stream events, the
//! same batch rows, and latencies from the same distribution.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::helpers::{Fake, Reply, Server, Upstreams};
use enrichd::testkit::dns::{Zone, nameserver};

const DOMAIN: &str = "acme.example";

/// What the company's home page publishes: a press address and a switchboard number.
const HOME_PAGE: &str = "<html><head><title>Acme | Warehouse robots</title>\
    <meta name=\"description\" content=\"Robots for warehouses\"></head><body>\
    <p>Press: <a href=\"mailto:press.office@acme.example\">press.office@acme.example</a></p>\
    <p>Call +44 20 7946 0000</p></body></html>";

const RDAP_DOMAIN: &str = r#"{"objectClassName":"domain","ldhName":"ACME.EXAMPLE",
  "entities":[{"objectClassName":"entity","roles":["registrar"],
    "vcardArray":["vcard",[["version",{},"text","4.0"],["fn",{},"text","Example Registrar Ltd"]]]}],
  "events":[{"eventAction":"registration","eventDate":"2004-03-01T00:00:00Z"}]}"#;

/// Every default source, each on a loopback fake that answers a never-seen person the way the real
/// service does, after a delay of its own.
struct World {
    up: Upstreams,
    openpgp: Fake,
    keybase: Fake,
    webfinger: Fake,
    rdap: Fake,
    site: Fake,
    dns: std::net::SocketAddr,
}

impl World {
    async fn start() -> Self {
        let up = Upstreams::start().await;
        let ms = Duration::from_millis;
        up.gravatar
            .otherwise(Reply::status(404, r#"{"error":"Profile not found"}"#).after(ms(30)));
        up.github.otherwise(
            Reply::json(json!({"total_count": 0, "incomplete_results": false, "items": []}))
                .after(ms(45)),
        );
        for class in ["seen", "gone"] {
            for i in 0..PER_SHAPE {
                up.github.on(
                    &format!("/users/{class}{i}x"),
                    Reply::status(404, r#"{"message":"Not Found","status":"404"}"#).after(ms(45)),
                );
            }
        }
        let openpgp = Fake::start().await;
        openpgp.otherwise(Reply::status(404, "No key found for this address").after(ms(35)));
        let keybase = Fake::start().await;
        keybase.otherwise(
            Reply::json(json!({"status": {"code": 205, "name": "NOT_FOUND", "desc": "Not found"}}))
                .after(ms(40)),
        );
        let webfinger = Fake::start().await;
        webfinger.otherwise(Reply::status(404, "").after(ms(25)));
        let rdap = Fake::start().await;
        rdap.on(
            &format!("/domain/{DOMAIN}"),
            Reply::raw(200, "application/rdap+json", RDAP_DOMAIN.into()).after(ms(20)),
        );
        let site = Fake::start().await;
        site.on(
            &format!("/{DOMAIN}"),
            Reply::raw(200, "text/html; charset=utf-8", HOME_PAGE.into()).after(ms(15)),
        );
        let zone = Zone::default()
            .mx("acme.example.", 10, "mx1.mailhost.example.")
            .txt("acme.example.", "v=spf1 mx -all");
        let (dns, _) = nameserver(zone).await;
        Self {
            up,
            openpgp,
            keybase,
            webfinger,
            rdap,
            site,
            dns,
        }
    }

    /// Every source on its fake, with budgets no test here reaches (an exhausted budget is a
    /// status of its own, and the opt-outs' expansions spend some).
    fn config(&self) -> String {
        let config = format!(
            "[exclusion]\noptout_per_minute = 100000\noptout_burst = 100000\n\
             [tenants]\nrate_per_minute = 100000\nburst = 100000\n{}\
             [sources.openpgp]\nbase_url = \"{}\"\n\
             [sources.keybase]\nbase_url = \"{}\"\n\
             [sources.webfinger]\nbase_url = \"{}\"\n\
             [sources.rdap]\nbase_url = \"{}\"\n\
             [sources.website]\nbase_url = \"{}/{{domain}}\"\n\
             [sources.dns]\nbase_url = \"dns://{}\"\n\
             [sources.finder]\nbase_url = \"\"\n",
            self.up.config(),
            self.openpgp.url,
            self.keybase.url,
            self.webfinger.url,
            self.rdap.url,
            self.site.url,
            self.dns,
        );
        config.replace("]\nbase_url", "]\nrate_per_minute = 100000\nbase_url")
    }
}

/// A name nobody else in the test has: letters only, from `i`.
fn surname(i: usize) -> String {
    let letters: String = [i / 26 % 26, i % 26]
        .iter()
        .map(|&n| char::from(b'a' + u8::try_from(n).expect("a letter")))
        .collect();
    format!("Q{letters}ington")
}

/// The query of shape `shape` for person `i` of class `class` (`seen` never, `gone` opted out).
fn query(shape: &str, class: &str, i: usize) -> Value {
    let n = i + if class == "gone" { 500 } else { 0 };
    match shape {
        "email" => json!({"email": format!("{class}.{i}@{DOMAIN}")}),
        "phone" => json!({"phone": format!("+44 20 7946 {:04}", 1000 + n)}),
        "profile" => json!({"profile_url": format!("https://github.com/{class}{i}x")}),
        _ => json!({"name": format!("Nadia {}", surname(n)), "company": "Acme", "domain": DOMAIN}),
    }
}

/// The opt-out that lists the person the query names.
fn opt_out_of(shape: &str, q: &Value) -> Value {
    match shape {
        "name" => json!({"name": q["name"], "company": q["company"]}),
        _ => q.clone(),
    }
}

/// Latency figures set to zero, everything else kept.
fn masked(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, x) in map.iter_mut() {
                    if k == "latency_ms" || k == "took_ms" {
                        *x = json!(0);
                    } else {
                        walk(x);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

/// A lookup as a client sees it: status, content type, body, and the wall time it took.
async fn timed_lookup(server: &Server, body: &Value) -> (u16, String, Value, Duration) {
    let started = Instant::now();
    let resp = server
        .post("/v1/lookup")
        .json(body)
        .send()
        .await
        .expect("lookup");
    let status = resp.status().as_u16();
    let ct = resp.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_string();
    let json: Value = resp.json().await.expect("json");
    (status, ct, json, started.elapsed())
}

/// The stream's frames in `accept` framing, latencies masked, source events sorted (sources finish
/// in an order that varies from one lookup to the next), the result last.
async fn stream(server: &Server, accept: &str, body: &Value) -> (String, Vec<Value>) {
    let resp = server
        .post("/v1/lookup")
        .header("accept", accept)
        .json(body)
        .send()
        .await
        .expect("stream");
    let ct = resp.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_string();
    let mut text = String::new();
    let mut chunks = resp.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
    }
    let frames: Vec<Value> = text
        .lines()
        .filter_map(|l| {
            l.strip_prefix("data: ")
                .or((!l.is_empty() && !l.starts_with("event:")).then_some(l))
        })
        .map(|l| masked(serde_json::from_str(l).expect("a JSON frame")))
        .collect();
    let (result, events) = frames.split_last().expect("a result frame");
    let mut events = events.to_vec();
    events.sort_by_key(Value::to_string);
    events.push(result.clone());
    (ct, events)
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// Whether two figures are within 25 % of the larger (or 5 ms, below which a shared machine's noise
/// is all there is).
fn close(a: Duration, b: Duration) -> bool {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    hi - lo <= Duration::from_millis(5).max(hi / 4)
}

const SHAPES: [&str; 4] = ["email", "phone", "profile", "name"];
const PER_SHAPE: usize = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_excluded_person_reads_exactly_like_a_person_nobody_knows() {
    let world = World::start().await;
    let server = Server::start(&world.config()).await;
    for shape in SHAPES {
        for i in 0..PER_SHAPE {
            let q = query(shape, "gone", i);
            let (status, body) = server.optout(opt_out_of(shape, &q)).await;
            assert_eq!(status, 200, "{body}");
        }
    }

    let mut report = Vec::new();
    for shape in SHAPES {
        let (mut seen_times, mut gone_times) = (Vec::new(), Vec::new());
        for i in 0..PER_SHAPE {
            let (s_status, s_ct, seen, s_took) =
                timed_lookup(&server, &query(shape, "seen", i)).await;
            let (g_status, g_ct, gone, g_took) =
                timed_lookup(&server, &query(shape, "gone", i)).await;
            assert_eq!(
                seen["found"], false,
                "{shape}: nobody knows this person: {seen}"
            );
            assert_eq!((g_status, g_ct), (s_status, s_ct), "{shape}");
            assert_eq!(masked(gone.clone()), masked(seen.clone()), "{shape} #{i}");
            seen_times.push(s_took);
            gone_times.push(g_took);
        }
        seen_times.sort();
        gone_times.sort();
        let (sm, gm) = (percentile(&seen_times, 50), percentile(&gone_times, 50));
        let (s9, g9) = (percentile(&seen_times, 90), percentile(&gone_times, 90));
        let line = format!(
            "shape={shape} miss_p50_ms={} excluded_p50_ms={} miss_p90_ms={} excluded_p90_ms={}",
            sm.as_millis(),
            gm.as_millis(),
            s9.as_millis(),
            g9.as_millis()
        );
        println!("{line}");
        report.push((shape, close(sm, gm) && close(s9, g9), line));
    }
    let off: Vec<&String> = report.iter().filter(|r| !r.1).map(|r| &r.2).collect();
    assert!(off.is_empty(), "latencies apart by more than 25 %: {off:?}");

    // The answers hold the domain's facts, and a never-seen person's sources all answered.
    let (_, _, seen, _) = timed_lookup(&server, &query("email", "seen", 0)).await;
    assert_eq!(seen["facts"]["accepts_mail"]["value"], "true", "{seen}");
    assert_eq!(seen["facts"]["site_name"]["value"], "Acme", "{seen}");
    let statuses: Vec<(&str, &str)> = seen["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().expect("name"),
                s["status"].as_str().expect("status"),
            )
        })
        .collect();
    for (name, status) in &statuses {
        assert!(
            matches!(*status, "miss" | "hit" | "skipped"),
            "{name} answered {status}: {seen}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_excluded_persons_streams_and_batch_rows_read_like_a_miss() {
    let world = World::start().await;
    let server = Server::start(&world.config()).await;
    for shape in SHAPES {
        let q = query(shape, "gone", 0);
        assert_eq!(server.optout(opt_out_of(shape, &q)).await.0, 200);
    }
    for shape in SHAPES {
        // One miss first, so that each source's recent misses are known.
        timed_lookup(&server, &query(shape, "seen", 9)).await;
        for accept in ["application/x-ndjson", "text/event-stream"] {
            let seen = stream(&server, accept, &query(shape, "seen", 0)).await;
            let gone = stream(&server, accept, &query(shape, "gone", 0)).await;
            assert_eq!(gone, seen, "{shape} {accept}");
        }
    }

    // One row per shape and class, the never-seen person's row right before the excluded one's.
    let cell = |q: &Value, k: &str| q[k].as_str().unwrap_or("").to_string();
    let mut csv = String::from("email,phone,profile_url,name,company,domain\n");
    for shape in SHAPES {
        for class in ["seen", "gone"] {
            let q = query(shape, class, 0);
            let cells =
                ["email", "phone", "profile_url", "name", "company", "domain"].map(|k| cell(&q, k));
            csv.push_str(&cells.join(","));
            csv.push('\n');
        }
    }
    let (summary, text) = server.run_batch(csv).await;
    assert_eq!(summary["rows_found"], 0, "{summary}");
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(
        rows.len(),
        2 * SHAPES.len(),
        "one row per input row: {text}"
    );
    for (pair, shape) in rows.chunks(2).zip(SHAPES) {
        let (seen, gone) = (&pair[0], &pair[1]);
        assert_eq!(
            gone[6..],
            seen[6..],
            "{shape}: the same enrichment cells: {text}"
        );
        assert_eq!(seen[6], "not_found", "{shape}: {text}");
        let q = query(shape, "gone", 0);
        let echoed =
            ["email", "phone", "profile_url", "name", "company", "domain"].map(|k| cell(&q, k));
        // A cell a spreadsheet would run (a phone's `+`) is written with a leading `'`.
        let given: Vec<&str> = gone[..6]
            .iter()
            .map(|c| c.trim_start_matches('\''))
            .collect();
        assert_eq!(given, echoed, "{shape}: input echoed: {text}");
    }
    server.stop().await;
}

/// With following turned off (`max_hops = 0`) and a paid provider in the waterfall, an excluded
/// person still reads like a miss: the guessed addresses a miss does not follow are not feigned
/// either, and the provider a miss asks for the fields still wanted is feigned in the same place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_following_off_and_a_paid_waterfall_an_excluded_person_still_reads_like_a_miss() {
    let world = World::start().await;
    let provider = Fake::start().await;
    provider
        .otherwise(Reply::status(404, r#"{"error":"no match"}"#).after(Duration::from_millis(30)));
    let config = format!(
        "{}[lookup]\nmax_hops = 0\n{}",
        world.config(),
        crate::paced::paid(&provider.url)
    );
    let server = Server::start_with_env(&config, &[("DIALER_KEY", "k")]).await;
    for shape in ["email", "name"] {
        let q = query(shape, "gone", 1);
        assert_eq!(server.optout(opt_out_of(shape, &q)).await.0, 200);
    }
    let status_of = |events: &[Value], source: &str| -> Option<String> {
        let result = events.last().expect("a result frame");
        result["sources"]
            .as_array()
            .expect("sources")
            .iter()
            .find(|s| s["name"] == source)
            .map(|s| s["status"].as_str().expect("status").to_string())
    };
    for shape in ["email", "name"] {
        // One miss first, so that each source's recent misses are known.
        timed_lookup(&server, &query(shape, "seen", 9)).await;
        let (_, seen) = stream(&server, "application/x-ndjson", &query(shape, "seen", 1)).await;
        let (_, gone) = stream(&server, "application/x-ndjson", &query(shape, "gone", 1)).await;
        assert_eq!(gone, seen, "{shape}");
        let (gravatar, dialer) = (status_of(&seen, "gravatar"), status_of(&seen, "dialer"));
        if shape == "email" {
            assert_eq!(
                dialer.as_deref(),
                Some("miss"),
                "a miss asks the provider: {seen:?}"
            );
        } else {
            // The finder's guesses are not followed: no email source is asked.
            assert_ne!(
                gravatar.as_deref(),
                Some("miss"),
                "guesses followed: {seen:?}"
            );
            assert_ne!(
                dialer.as_deref(),
                Some("miss"),
                "guesses followed: {seen:?}"
            );
        }
    }
    let asked = |email: &str| {
        let q: String = url::form_urlencoded::byte_serialize(email.as_bytes()).collect();
        provider.hits(&format!("/people?email={q}"))
    };
    assert!(
        asked(&format!("seen.1@{DOMAIN}")) >= 1,
        "the miss asked the provider"
    );
    assert_eq!(
        asked(&format!("gone.1@{DOMAIN}")),
        0,
        "nobody asked about the excluded person"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_contact_address_a_site_publishes_is_withheld_once_its_person_opts_out() {
    let world = World::start().await;
    let server = Server::start(&world.config()).await;
    let (_, before) = server
        .lookup(json!({"email": format!("someone@{DOMAIN}")}))
        .await;
    assert_eq!(
        before["facts"]["contact_email"]["value"], "press.office@acme.example",
        "the site publishes it: {before}"
    );

    assert_eq!(
        server
            .optout(json!({"email": "press.office@acme.example"}))
            .await
            .0,
        200
    );
    let (_, after) = server
        .lookup(json!({"email": format!("another@{DOMAIN}")}))
        .await;

    assert_eq!(after["found"], false);
    assert!(!after.to_string().contains("press.office"), "{after}");
    assert!(
        after["facts"]["site_name"].is_object(),
        "the other facts stay: {after}"
    );
    server.stop().await;
}

/// What a tenant sees of Gravatar in `GET /v1/sources`: what is left of its budget and how many
/// answers it holds.
async fn gravatar_state(server: &Server) -> (u64, u64) {
    let body: Value = server
        .get("/v1/sources")
        .send()
        .await
        .expect("sources")
        .json()
        .await
        .expect("json");
    let gravatar = body["sources"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "gravatar"))
        .unwrap_or_else(|| panic!("no gravatar in {body}"));
    let remaining = gravatar["budget"]["remaining"].as_u64();
    let cached = gravatar["cache_entries"].as_u64();
    (
        remaining.unwrap_or_else(|| panic!("no budget: {gravatar}")),
        cached.unwrap_or_else(|| panic!("no cache_entries: {gravatar}")),
    )
}

/// Gravatar's status in a lookup of `email`.
async fn gravatar_says(server: &Server, email: &str) -> String {
    let (status, body) = server.lookup(json!({ "email": email })).await;
    assert_eq!(status, 200, "{body}");
    crate::helpers::status_of(&body, "gravatar").to_string()
}

/// The source's state a tenant can read moves with an excluded person's lookups exactly as with a
/// miss's: the lookup spends a cell of the budget and leaves a cached answer, a repeat is answered
/// from the cache after the budget is spent, and a new person then meets `rate_limited`. Before,
/// an excluded person's lookup spent nothing and cached nothing, and read `miss` where a miss read
/// `rate_limited` — three ways to tell who opted out.
#[tokio::test]
async fn an_excluded_person_spends_budget_meets_refusals_and_is_cached_like_a_miss() {
    let mut seen = Vec::new();
    for class in ["nobody", "gone"] {
        let up = Upstreams::start().await;
        up.gravatar
            .otherwise(Reply::status(404, r#"{"error":"Profile not found"}"#));
        // One call a minute: the test runs well inside the minute before a cell comes back.
        let server = Server::start(&format!(
            "[sources.gravatar]\nbase_url = \"{}\"\ntimeout_ms = 1500\nrate_per_minute = 1\n",
            up.gravatar.url
        ))
        .await;
        let (first, second) = (
            format!("{class}.first@budget.example"),
            format!("{class}.second@budget.example"),
        );
        if class == "gone" {
            let resp = server
                .admin(reqwest::Method::POST, "/v1/admin/exclusions")
                .json(&json!({"identifiers": [{"email": first}, {"email": second}]}))
                .send()
                .await
                .expect("import");
            assert_eq!(resp.status().as_u16(), 200);
        }
        let before = gravatar_state(&server).await;
        let asked = gravatar_says(&server, &first).await;
        let after = gravatar_state(&server).await;
        // The budget is spent now: someone nobody knows meets the refusal.
        let filler = gravatar_says(&server, "filler@budget.example").await;
        let again = gravatar_says(&server, &first).await;
        let other = gravatar_says(&server, &second).await;
        let end = gravatar_state(&server).await;
        if class == "gone" {
            for e in [&first, &second] {
                assert_eq!(
                    up.gravatar.hits(&Upstreams::gravatar_path(e)),
                    0,
                    "asked about {e}"
                );
            }
        }
        seen.push((class, before, asked, after, filler, again, other, end));
        server.stop().await;
    }
    let (nobody, gone) = (&seen[0], &seen[1]);
    assert_eq!(
        (
            nobody.1, &nobody.2, nobody.3, &nobody.4, &nobody.5, &nobody.6, nobody.7
        ),
        (
            (1, 0),
            &"miss".to_string(),
            (0, 1),
            &"rate_limited".to_string(),
            &"miss".to_string(),
            &"rate_limited".to_string(),
            (0, 1)
        ),
        "the miss's own course: {nobody:?}"
    );
    assert_eq!(
        (gone.1, &gone.2, gone.3, &gone.4, &gone.5, &gone.6, gone.7),
        (
            nobody.1, &nobody.2, nobody.3, &nobody.4, &nobody.5, &nobody.6, nobody.7
        ),
        "an excluded person's course differs from a miss's"
    );
}
