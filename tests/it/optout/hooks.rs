//! Hooks run after the list holds everything and before the answer; a failed one is a safe 503. The
//! list compacts at start.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Server, Upstreams};

/// A store that fails its first purge and records, for each call, what it was given and whether the
/// list already held it.
struct FlakyStore {
    list: std::sync::Arc<enrichd::exclusion::ExclusionList>,
    calls: std::sync::Mutex<Vec<Vec<(String, bool)>>>,
}

impl enrichd::exclusion::OptOutHook for FlakyStore {
    fn name(&self) -> &'static str {
        "test_store"
    }

    fn opted_out<'a>(
        &'a self,
        ids: &'a [enrichd::domain::Identifier],
    ) -> futures::future::BoxFuture<'a, Result<(), enrichd::exclusion::HookError>> {
        use enrichd::exclusion::ExclusionCheck;
        let seen: Vec<(String, bool)> = ids
            .iter()
            .map(|id| (id.canonical(), self.list.is_excluded(id)))
            .collect();
        let mut calls = self.calls.lock().expect("lock");
        calls.push(seen);
        let first = calls.len() == 1;
        Box::pin(async move {
            if first {
                Err(enrichd::exclusion::HookError {
                    what: "test_store",
                    detail: "disk quota exceeded".into(),
                })
            } else {
                Ok(())
            }
        })
    }
}

#[tokio::test]
async fn a_failed_hook_is_a_503_that_says_the_opt_out_is_recorded_and_resubmitting_is_safe() {
    let up = Upstreams::start().await;
    up.gravatar_contact(
        "hooked@example.com",
        "Hooked Person",
        &[],
        None,
        &["https://github.com/hookedperson"],
    );
    let store = std::sync::Arc::new(std::sync::OnceLock::new());
    let server = Server::start_custom(&up.config(), &[], {
        let store = store.clone();
        move |app| {
            let hook = std::sync::Arc::new(FlakyStore {
                list: app.state.exclusion.clone(),
                calls: std::sync::Mutex::new(Vec::new()),
            });
            let _ = store.set(hook.clone());
            app.state
                .get_mut()
                .expect("the state is not shared before the server starts")
                .optout_hooks = std::sync::Arc::new(vec![
                hook as std::sync::Arc<dyn enrichd::exclusion::OptOutHook>,
            ]);
        }
    })
    .await;

    let first = server
        .anon(Method::POST, "/v1/optout")
        .json(&json!({"email": "hooked@example.com"}))
        .send()
        .await
        .expect("optout");
    assert_eq!(first.status(), 503);
    assert_eq!(first.headers()["retry-after"], "5");
    assert_eq!(first.headers()["content-type"], "application/problem+json");
    let problem: Value = first.json().await.expect("json");
    let detail = problem["detail"].as_str().expect("detail");
    assert!(detail.contains("is recorded"), "{detail}");
    assert!(detail.contains("again is safe"), "{detail}");
    assert!(
        !detail.contains("quota"),
        "the hook's own error stays in the log"
    );
    let hits = up.total_hits();
    let (_, body) = server.lookup(json!({"email": "hooked@example.com"})).await;
    assert_eq!(body["found"], false, "already enforced");
    assert_eq!(up.total_hits(), hits);

    let (second, _) = server.optout(json!({"email": "hooked@example.com"})).await;

    assert_eq!(second, 200, "resubmitting completes it");
    let calls = store
        .get()
        .expect("hook registered")
        .calls
        .lock()
        .expect("lock")
        .clone();
    assert_eq!(calls.len(), 2);
    let mut given: Vec<&str> = calls[0].iter().map(|(id, _)| id.as_str()).collect();
    given.sort_unstable();
    assert_eq!(
        given,
        ["github.com/hookedperson", "hooked@example.com"],
        "given and expanded"
    );
    assert!(
        calls.iter().flatten().all(|(_, listed)| *listed),
        "hooks run only once the list holds every identifier"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_service_compacts_away_opt_outs_past_their_retention_at_start() {
    use enrichd::domain::{Email, Identifier};
    use enrichd::exclusion::{ExclusionCheck, ExclusionKey, ExclusionList, Origin};
    use std::time::{Duration, SystemTime};
    let data = tempfile::tempdir().expect("data dir");
    let dir = data.path().join("exclusion");
    let old = SystemTime::now() - Duration::from_secs(10 * 86_400);
    {
        // The key the service will read, and two opt-outs: one 10 days old, one fresh.
        let (key, _) = ExclusionKey::resolve(None, None, data.path()).expect("key");
        let (list, _) = ExclusionList::open(&dir, key, 30, SystemTime::now()).expect("list");
        let list = list.with_clock(move || old);
        let id = |e: &str| Identifier::Email(Email::parse(e).expect("email"));
        list.add(&[id("old@example.com")], Origin::Cli)
            .await
            .expect("old");
        let list = list.with_clock(SystemTime::now);
        list.add(&[id("fresh@example.com")], Origin::Cli)
            .await
            .expect("fresh");
    }
    let config = crate::helpers::loopback_only(
        "[retention]\nbatch_results_days = 30\nsource_cache_seconds = 60\nexclusion_days = 7\n",
    );
    let loaded = enrichd::config::Config::from_toml(&config, &[]).expect("config");

    let app = enrichd::app::App::build(&loaded, data.path())
        .await
        .expect("app");

    let list = &app.state.exclusion;
    let stats = list.stats().await;
    assert_eq!(stats.entries, 1);
    assert_eq!(
        stats.log_bytes,
        32 + 56,
        "the old record is gone from the file"
    );
    assert!(list.is_excluded(&Identifier::Email(
        Email::parse("fresh@example.com").expect("email")
    )));
    assert!(!list.is_excluded(&Identifier::Email(
        Email::parse("old@example.com").expect("email")
    )));
}
