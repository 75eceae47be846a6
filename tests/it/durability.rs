//! Durability seen from outside: the real binary under `strace -f` (Debian's strace; scripts/test
//! installs it) shows that an opt-out's record is written to the exclusion log and the log fsynced
//! before the first byte of the HTTP answer, and that the log's directory was fsynced (when the
//! log was made) before it too. A SIGKILL test cannot show this: the kernel keeps written pages
//! when a process dies, fsync or not.

use std::collections::HashMap;
use std::time::Duration;

use crate::binary::Setup;

/// One system call as strace reported it, with the line where it began and where it ended.
#[derive(Debug)]
struct Call {
    began: usize,
    ended: usize,
    /// The call as printed (`fdatasync(9</tmp/.../exclusion.log>) = 0`), rejoined when strace split it.
    text: String,
}

impl Call {
    fn is(&self, names: &[&str]) -> bool {
        names
            .iter()
            .any(|n| self.text.starts_with(&format!("{n}(")))
    }

    fn succeeded(&self) -> bool {
        self.text.trim_end().ends_with("= 0")
    }
}

/// Parses `strace -f -o` output (`PID  call(...) = ret`, split across `<unfinished ...>` and
/// `<... call resumed>` when threads interleave).
fn calls(trace: &str) -> Vec<Call> {
    let mut pending: HashMap<&str, (usize, String)> = HashMap::new();
    let mut out = Vec::new();
    for (i, line) in trace.lines().enumerate() {
        let Some((pid, rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(head) = rest.strip_suffix("<unfinished ...>") {
            pending.insert(pid, (i, head.to_string()));
        } else if rest.starts_with("<... ") {
            let tail = rest.split_once("resumed>").map_or("", |(_, t)| t);
            if let Some((began, head)) = pending.remove(pid) {
                out.push(Call {
                    began,
                    ended: i,
                    text: format!("{head}{tail}"),
                });
            }
        } else {
            out.push(Call {
                began: i,
                ended: i,
                text: rest.to_string(),
            });
        }
    }
    out.sort_by_key(|c| c.ended);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opt_out_is_fsynced_file_and_directory_before_its_answer_is_written() {
    let s = Setup::new("").await;
    let trace_path = s.data.path().join("strace.txt");
    let trace_arg = trace_path.display().to_string();
    let cmd = s.command_under(
        &[
            "strace",
            "-f",
            "-qq",
            "-e",
            "signal=none",
            "-yy",
            "-s",
            "256",
            "-e",
            "trace=read,recvfrom,write,writev,sendto,sendmsg,fsync,fdatasync",
            "-o",
            &trace_arg,
        ],
        &["serve", "--listen", "127.0.0.1:0"],
    );
    let mut inst = s
        .start_command(cmd)
        .await
        .expect("serve starts under strace");

    let http = reqwest::Client::new();
    let status = crate::binary::post_optout(&http, &inst.url, "durable@example.com").await;
    assert_eq!(status, Ok(200));
    drop(http);

    // SIGTERM to the server (strace's child): it drains and exits, and strace with it, so the whole
    // trace is on disk.
    let strace = inst.pid();
    let children = std::fs::read_to_string(format!("/proc/{strace}/task/{strace}/children"))
        .expect("strace's children");
    let server = children
        .split_whitespace()
        .next()
        .expect("the traced server");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", server])
        .status()
        .expect("run kill");
    assert!(killed.success());
    assert!(
        inst.wait_exit(Duration::from_secs(60)).await.is_some(),
        "the server and strace exit"
    );

    let trace = std::fs::read_to_string(&trace_path).expect("the trace");
    let calls = calls(&trace);
    let request = calls
        .iter()
        .find(|c| c.is(&["read", "recvfrom"]) && c.text.contains("POST /v1/optout"))
        .unwrap_or_else(|| panic!("the opt-out request is read:\n{trace}"));
    let answer = calls
        .iter()
        .filter(|c| c.began > request.ended)
        .find(|c| c.is(&["write", "writev", "sendto", "sendmsg"]) && c.text.contains("HTTP/1.1 "))
        .unwrap_or_else(|| panic!("the opt-out answer is written:\n{trace}"));
    assert!(answer.text.contains("HTTP/1.1 200"), "{}", answer.text);
    let on_log = |c: &&Call| c.text.contains("/exclusion/exclusion.log>");
    let record = calls
        .iter()
        .filter(on_log)
        .find(|c| c.is(&["write", "writev"]) && c.began > request.ended)
        .unwrap_or_else(|| panic!("the record is written to the log:\n{trace}"));
    let log_sync = calls
        .iter()
        .filter(on_log)
        .find(|c| c.is(&["fsync", "fdatasync"]) && c.began > record.ended && c.succeeded());
    let log_sync =
        log_sync.unwrap_or_else(|| panic!("the log is fsynced after the record:\n{trace}"));
    assert!(
        log_sync.ended < answer.began,
        "the answer was written before the log's fsync returned: {log_sync:?} / {answer:?}"
    );
    let dir_sync = calls
        .iter()
        .find(|c| c.is(&["fsync"]) && c.text.contains("/exclusion>") && c.succeeded())
        .unwrap_or_else(|| panic!("the log's directory is fsynced:\n{trace}"));
    assert!(dir_sync.ended < answer.began, "{dir_sync:?} / {answer:?}");
}
