//! The real binary killed with SIGKILL right after opt-outs are acknowledged, many times: every
//! acknowledged opt-out is still enforced after restart. A torn tail is recovered; a corrupted middle
//! is refused with a clear sentence and exit code 1.

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde_json::json;

use crate::binary::{Setup, post_optout};
use crate::helpers::metric;

const ROUNDS: usize = 20;
const PER_ROUND: usize = 3;
const MISSES: &str = r#"enrichd_lookups_total{outcome="miss"}"#;
const UNLIMITED: &str = "[exclusion]\noptout_per_minute = 100000\noptout_burst = 100000\n";

/// Opts `emails` out one after another; returns them once all are acknowledged.
async fn opt_out_all(s: &Setup, inst: &crate::binary::Instance, emails: &[String]) {
    for e in emails {
        assert_eq!(s.optout(inst, e).await, Ok(200), "{e}");
    }
}

/// Each is excluded: a miss that asks no upstream although the upstream knows the person.
async fn assert_enforced(s: &Setup, inst: &crate::binary::Instance, emails: &[String]) {
    let hits = s.up.total_hits();
    for e in emails {
        let body = s.lookup(inst, json!({ "email": e })).await;
        assert_eq!(body["found"], false, "{e} is enforced after restart");
        assert_eq!(body["profile"], serde_json::Value::Null);
    }
    assert_eq!(s.up.total_hits(), hits, "no upstream was asked");
    let metrics = crate::binary::metrics(&s.http, inst).await;
    assert_eq!(metric(&metrics, MISSES), emails.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_opt_out_survives_sigkill_right_after_its_acknowledgement() {
    let s = Setup::new(UNLIMITED).await;
    let mut acknowledged = Vec::new();
    let mut unacknowledged = 0;

    for round in 0..ROUNDS {
        let inst = s.start().await.expect("the server starts after a kill");
        let emails: Vec<String> = (0..PER_ROUND)
            .map(|i| format!("crash.r{round}.i{i}@example.com"))
            .collect();
        for e in &emails {
            s.up.gravatar_profile(e, "Crash Person", "Acme", None);
        }
        let url = inst.url.clone();
        let mut pending: FuturesUnordered<_> = emails
            .iter()
            .cloned()
            .map(|e| {
                let (http, url) = (s.http.clone(), url.clone());
                tokio::spawn(async move {
                    let result = post_optout(&http, &url, &e).await;
                    (e, result)
                })
            })
            .collect();
        // SIGKILL at the first acknowledgement, with the other opt-outs still in flight.
        while let Some(joined) = pending.next().await {
            let (email, result) = joined.expect("request task");
            if result == Ok(200) {
                acknowledged.push(email);
                break;
            }
            unacknowledged += 1;
        }
        inst.kill();
        while let Some(joined) = pending.next().await {
            match joined.expect("request task") {
                (email, Ok(200)) => acknowledged.push(email),
                _ => unacknowledged += 1,
            }
        }
        assert!(
            s.http.get(format!("{url}/healthz")).send().await.is_err(),
            "the process is gone"
        );
    }
    let inst = s.start().await.expect("restart");

    assert!(
        acknowledged.len() >= ROUNDS,
        "at least one acknowledgement per round"
    );
    assert_enforced(&s, &inst, &acknowledged).await;
    let stderr = s.stderr.lock().expect("lock").clone();
    assert!(!stderr.contains("crash.r"), "no process logged an address");
    eprintln!(
        "crash test: {} acknowledged opt-outs over {ROUNDS} SIGKILLs all enforced after restart; \
         {unacknowledged} were cut off by the kill",
        acknowledged.len()
    );
    inst.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_truncated_at_start_and_the_entries_are_kept() {
    let s = Setup::new(UNLIMITED).await;
    let emails: Vec<String> = (0..3).map(|i| format!("torn.{i}@example.com")).collect();
    for e in &emails {
        s.up.gravatar_profile(e, "Torn Person", "Acme", None);
    }
    let inst = s.start().await.expect("start");
    opt_out_all(&s, &inst, &emails).await;
    inst.kill();
    let good_len = std::fs::metadata(s.log_path()).expect("log").len();
    let mut bytes = std::fs::read(s.log_path()).expect("read");
    bytes.extend_from_slice(&[0xA5; 23]);
    std::fs::write(s.log_path(), &bytes).expect("tear");

    let inst = s
        .start()
        .await
        .expect("a torn tail does not stop the start");

    assert!(inst.stderr().contains("torn write"), "{}", inst.stderr());
    assert_eq!(
        std::fs::metadata(s.log_path()).expect("log").len(),
        good_len,
        "the torn bytes were cut off"
    );
    assert_enforced(&s, &inst, &emails).await;
    inst.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_middle_record_refuses_the_start_with_a_clear_error() {
    let s = Setup::new(UNLIMITED).await;
    let emails: Vec<String> = (0..3).map(|i| format!("corrupt.{i}@example.com")).collect();
    let inst = s.start().await.expect("start");
    opt_out_all(&s, &inst, &emails).await;
    inst.kill();
    let mut bytes = std::fs::read(s.log_path()).expect("read");
    // Byte 20 of the first record (the log header is 32 bytes), with valid records after it.
    bytes[32 + 20] ^= 0xFF;
    std::fs::write(s.log_path(), &bytes).expect("corrupt");

    let (code, stderr) = match s.start().await {
        Ok(_) => panic!("a corrupt log must refuse the start"),
        Err(failed) => failed,
    };

    assert_eq!(code, Some(1), "{stderr}");
    let last = stderr.lines().last().expect("an error line");
    assert!(last.starts_with("enrichd: "), "{stderr}");
    assert!(last.contains("is corrupt at byte offset 32"), "{last}");
    assert!(last.contains("restore the file from a backup"), "{last}");
    assert_eq!(
        std::fs::read(s.log_path()).expect("read"),
        bytes,
        "a refused log is left as it was"
    );
}
