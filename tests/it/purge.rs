//! The opt-out purge of stored batches through its journal, on the real binary: a client that hangs
//! up mid-request does not stop it, and neither does SIGKILL in the middle of it; the restarted
//! server finishes it. Every wait is on an event (a journal entry appearing or going, a batch
//! finishing), never on a fixed sleep.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::binary::{Instance, Setup};

/// One part per row, so that a purge has hundreds of parts to rewrite: long enough to be cut.
const CONFIG: &str = "[exclusion]\noptout_per_minute = 100000\noptout_burst = 100000\n\
                      [batches]\npart_rows = 1\n[tenants]\nrate_per_minute = 100000\nburst = 100000\n";
const ROWS_EACH: usize = 400;
const DEADLINE: Duration = Duration::from_secs(120);

/// Every file under `dir`; none while it does not exist.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn journal_dir(s: &Setup) -> PathBuf {
    s.data.path().join("blobs").join("state").join("purges")
}

fn journal(s: &Setup) -> Vec<PathBuf> {
    files_under(&journal_dir(s))
}

/// Waits until `done` holds, polling; panics with `what` (and the servers' warnings) past the
/// deadline.
async fn until(s: &Setup, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > DEADLINE {
            let stderr = s.stderr.lock().expect("lock").clone();
            let warnings: Vec<&str> = stderr
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .collect();
            panic!("{what}; warnings: {warnings:#?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn upload(s: &Setup, inst: &Instance, csv: String) -> String {
    let resp = s
        .http
        .post(format!("{}/v1/batches", inst.url))
        .bearer_auth(&s.tenant_key)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status().as_u16(), 202);
    let body: Value = resp.json().await.expect("json");
    body["id"].as_str().expect("id").to_string()
}

async fn summary(s: &Setup, inst: &Instance, id: &str) -> Value {
    s.http
        .get(format!("{}/v1/batches/{id}", inst.url))
        .bearer_auth(&s.tenant_key)
        .send()
        .await
        .expect("summary")
        .json()
        .await
        .expect("json")
}

async fn wait_done(s: &Setup, inst: &Instance, id: &str) {
    let start = Instant::now();
    loop {
        let summary = summary(s, inst, id).await;
        if summary["status"] == "done" {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "never finished: {summary}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn result(s: &Setup, inst: &Instance, id: &str) -> String {
    let resp = s
        .http
        .get(format!("{}/v1/batches/{id}/result.csv", inst.url))
        .bearer_auth(&s.tenant_key)
        .send()
        .await
        .expect("result");
    assert_eq!(resp.status().as_u16(), 200);
    resp.text().await.expect("text")
}

/// The result of `id` once it no longer holds `email`, waited for (the download's read-time filter
/// shows a pending purge's rows as misses, still holding the input): panics past the deadline.
async fn gone_from(s: &Setup, inst: &Instance, id: &str, email: &str) -> String {
    let start = Instant::now();
    loop {
        let text = result(s, inst, id).await;
        if !text.contains(email) {
            return text;
        }
        assert!(start.elapsed() < DEADLINE, "{email} stays in {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stored inputs left under `blobs/batches/`.
fn inputs(root: &Path) -> Vec<PathBuf> {
    files_under(&root.join("blobs").join("batches"))
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "input"))
        .collect()
}

/// Sends the opt-out of `email` and hangs up as soon as its journal entry exists; the entry.
async fn opt_out_and_hang_up(s: &Setup, inst: &Instance, email: &str) -> PathBuf {
    let before = journal(s);
    let (http, url, email) = (s.http.clone(), inst.url.clone(), email.to_string());
    let request =
        tokio::spawn(async move { crate::binary::post_optout(&http, &url, &email).await });
    let mut entry = None;
    until(s, "the opt-out's purge was journalled", || {
        entry = journal(s).into_iter().find(|p| !before.contains(p));
        entry.is_some()
    })
    .await;
    request.abort();
    assert!(
        request.await.is_err_and(|e| e.is_cancelled()),
        "the client hung up before the answer"
    );
    entry.expect("entry")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opt_out_cut_off_by_its_client_and_by_sigkill_still_purges_every_stored_result_and_input()
 {
    let s = Setup::new(CONFIG).await;
    let (ada, carol) = ("purge.ada@example.com", "purge.carol@example.com");
    // Opted out with a SIGKILL in the middle, one after another until a kill lands mid-purge.
    let killed: Vec<String> = (0..3)
        .map(|i| format!("purge.bob{i}@example.com"))
        .collect();
    let mut people = vec![ada.to_string()];
    people.extend(killed.iter().cloned());
    for email in &people {
        s.up.gravatar_profile(email, "Purged Person", "Acme", None);
    }
    s.up.gravatar_profile(carol, "Carol Kept", "Acme", None);
    let inst = s.start().await.expect("start");
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut csv = String::from("email,company\n");
        for i in 0..ROWS_EACH {
            csv.push_str(&format!("{},Acme\n", people[i % people.len()]));
        }
        csv.push_str(&format!("{carol},Acme\n"));
        ids.push(upload(&s, &inst, csv).await);
    }
    for id in &ids {
        wait_done(&s, &inst, id).await;
        let text = result(&s, &inst, id).await;
        for email in &people {
            assert!(text.contains(email.as_str()), "{text}");
        }
        assert!(
            text.contains("Purged Person"),
            "found before the opt-outs: {text}"
        );
    }
    assert!(
        inputs(s.data.path()).is_empty(),
        "an ended batch keeps no input"
    );

    // A client that hangs up: the purge goes on, and its entry goes once it is done.
    let entry = opt_out_and_hang_up(&s, &inst, ada).await;
    until(&s, "the purge finished without its client", || {
        !entry.exists()
    })
    .await;
    for id in &ids {
        let text = gone_from(&s, &inst, id, ada).await;
        assert!(text.contains(killed[0].as_str()), "only Ada's rows went");
    }

    // A client that hangs up, then SIGKILL while the purge is under way; the restarted server
    // finishes it.
    let mut inst = inst;
    let mut mid_purge = 0;
    for email in &killed {
        let entry = opt_out_and_hang_up(&s, &inst, email).await;
        inst.kill();
        mid_purge += usize::from(entry.exists());
        inst = s.start().await.expect("restart");
        until(&s, "the restarted server finished the purge", || {
            journal(&s).is_empty()
        })
        .await;
        if mid_purge > 0 {
            break;
        }
    }
    assert!(mid_purge > 0, "a kill landed while the purge was under way");

    for id in &ids {
        let text = result(&s, &inst, id).await;
        assert!(!text.contains(ada), "{text}");
        for email in killed.iter().take(mid_purge) {
            assert!(!text.contains(email.as_str()), "{email} in {text}");
        }
        assert_eq!(
            text.lines().filter(|l| l.contains(carol)).count(),
            1,
            "the other row stays: {text}"
        );
        let summary = summary(&s, &inst, id).await;
        let found = text
            .lines()
            .filter(|l| l.split(',').nth(2) == Some("found"))
            .count();
        assert_eq!(
            summary["rows_found"], found as u64,
            "the counters follow the purge: {summary}"
        );
    }
    assert!(inputs(s.data.path()).is_empty(), "no input is stored");
    let stderr = s.stderr.lock().expect("lock").clone();
    assert!(!stderr.contains("purge.ada") && !stderr.contains("purge.bob"));
    inst.kill();
}
