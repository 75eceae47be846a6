//! Test support shared by the unit tests, the integration tests and the benches: a loopback
//! nameserver ([`dns`]), a hung upstream ([`silent`]), and a real
//! S3-compatible server (moto's server mode, `pip install 'moto[server]'`, installed by
//! `scripts/test`) on a free loopback port, one per test process, each test in its own bucket.
//! Not used by the service.

pub mod dns;
pub mod silent;

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use secrecy::SecretString;

/// The running moto server of this process.
pub struct Moto {
    pub endpoint: String,
    _child: Child,
}

static MOTO: OnceLock<Moto> = OnceLock::new();

/// Runs `open` again while it fails with an error `locked` accepts, for up to 2 s: a child process
/// another test is spawning (moto, say) holds a copy of every descriptor, a file lock's among them,
/// until its `exec`, so a lock just released in this test can still look held for a moment.
pub fn open_waiting_out_spawns<T, E>(
    mut open: impl FnMut() -> Result<T, E>,
    locked: impl Fn(&E) -> bool,
) -> Result<T, E> {
    for _ in 0..100 {
        match open() {
            Err(e) if locked(&e) => std::thread::sleep(Duration::from_millis(20)),
            opened => return opened,
        }
    }
    open()
}

/// The moto server of this process, started on first use. Panics with a clear message when
/// `moto_server` is not installed.
pub fn moto() -> &'static Moto {
    MOTO.get_or_init(|| {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        // The shell outlives neither this process nor moto: it kills moto when the test process is gone.
        let script = format!(
            "moto_server -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; trap 'kill $m 2>/dev/null' EXIT; \
             while kill -0 {parent} 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 0.5; done",
            parent = std::process::id()
        );
        let child = Command::new("bash")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .spawn()
            .expect("bash runs moto_server");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "moto_server did not start on 127.0.0.1:{port}; install it with pip install 'moto[server]' \
                 (scripts/test does)"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            _child: child,
        }
    })
}

impl Moto {
    /// A new empty bucket with a random name.
    pub async fn bucket(&self) -> String {
        let name = format!("enrichd-{:016x}", rand::random::<u64>());
        let resp = reqwest::Client::new()
            .put(format!("{}/{name}", self.endpoint))
            .send()
            .await
            .expect("moto answers");
        assert!(
            resp.status().is_success(),
            "creating bucket {name}: {}",
            resp.status()
        );
        name
    }

    /// The `AWS_*` variables that point a client at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// [`Moto::env`] as the store takes it.
    pub fn secrets(&self) -> Vec<(String, SecretString)> {
        self.env()
            .into_iter()
            .map(|(k, v)| (k, SecretString::from(v)))
            .collect()
    }
}

/// The files under `dir` (recursively) whose bytes contain `needle`, ignoring case.
pub fn grep_files(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    let needle = needle.to_lowercase();
    let mut stack = vec![dir.to_path_buf()];
    let mut found = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default())
                .to_lowercase()
                .contains(&needle)
            {
                found.push(path);
            }
        }
    }
    found
}

/// A running `enrichd serve` child (JSON logs, `--listen 127.0.0.1:0`, metrics on a free loopback
/// port), SIGKILLed when dropped.
pub struct Served {
    child: std::process::Child,
    pub url: String,
    /// The operator's listener (`server.metrics_listen`), where `/metrics` needs no key.
    pub metrics_url: String,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    stdout: std::sync::Mutex<std::sync::mpsc::Receiver<String>>,
}

impl Served {
    /// Spawns `cmd` with its stderr piped (every line also copied into `also`) and waits up to
    /// `timeout` for its "listening" line. Blocking. `Err` with the exit code and stderr when the
    /// process ends instead.
    pub fn spawn(
        mut cmd: std::process::Command,
        also: Option<std::sync::Arc<std::sync::Mutex<String>>>,
        timeout: Duration,
    ) -> Result<Self, (Option<i32>, String)> {
        use std::io::{BufRead, BufReader};
        cmd.env("ENRICHD_SERVER__METRICS_LISTEN", "127.0.0.1:0");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn enrichd serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (out_tx, out_rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = out_tx.send(line);
            }
        });
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel::<(String, String)>();
        let own = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mine = own.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                for sink in std::iter::once(&mine).chain(also.as_ref()) {
                    let mut text = sink.lock().expect("lock");
                    text.push_str(&line);
                    text.push('\n');
                }
                if let Some(addrs) = listening_addrs(&line) {
                    let _ = tx.send(addrs);
                }
            }
        });
        match rx.recv_timeout(timeout) {
            Ok((addr, metrics)) => Ok(Self {
                child,
                url: format!("http://{addr}"),
                metrics_url: format!("http://{metrics}"),
                stderr: own,
                stdout: std::sync::Mutex::new(out_rx),
            }),
            Err(_) => {
                let status = child.wait().ok().and_then(|s| s.code());
                // The reader ends with the process: all its lines are copied once it is joined.
                let _ = reader.join();
                let text = own.lock().expect("lock").clone();
                Err((status, text))
            }
        }
    }

    /// SIGKILL: no shutdown, no flush, nothing the process could finish.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process id of what was spawned (a wrapper's, when the service runs under one).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM: the service stops accepting and drains.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM");
    }

    /// Waits up to `within` for the process to exit; its exit code, or `None` if it is still running.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<Option<i32>> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code());
            }
            if start.elapsed() > within {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// What the process wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }

    /// Stops the process and returns every line it wrote on stdout.
    pub fn kill_and_read_stdout(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let rx = self.stdout.lock().expect("lock");
        rx.iter().collect()
    }

    /// The lines the process wrote on stdout, up to and including the first that `last` accepts
    /// (waiting up to `timeout` for each); every line written so far when the process closes its
    /// stdout first.
    pub fn stdout_until(&self, timeout: Duration, last: impl Fn(&str) -> bool) -> Vec<String> {
        let rx = self.stdout.lock().expect("lock");
        let mut lines = Vec::new();
        while let Ok(line) = rx.recv_timeout(timeout) {
            let done = last(&line);
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in the server's JSON startup line, `{"fields":{"message":"enrichd is listening.",
/// "addr":"127.0.0.1:PORT",...}}`.
pub fn listening_addr(line: &str) -> Option<String> {
    listening_addrs(line).map(|(addr, _)| addr)
}

/// The public and the metrics addresses in the server's JSON startup line (`addr`, `metrics`).
fn listening_addrs(line: &str) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = v.get("fields")?;
    if fields.get("message")?.as_str()? != "enrichd is listening." {
        return None;
    }
    let field = |name: &str| fields.get(name)?.as_str().map(str::to_string);
    Some((field("addr")?, field("metrics")?))
}
