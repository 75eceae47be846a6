//! Test support shared by the unit tests, the integration tests and the benches: a real
//! S3-compatible server (moto's server mode, `pip install 'moto[server]'`, installed by
//! `scripts/test`) on a free loopback port, one per test process, each test in its own bucket.
//! Not used by the service.

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
