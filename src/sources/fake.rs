//! Loopback fakes for source tests: a real HTTP server on `127.0.0.1:0` serving an axum router.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::sources::SourceError;
use crate::sources::ssrf::HostResolver;

/// Serves `router` on an ephemeral loopback port until the test's runtime ends.
pub async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("bound address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

/// A response with a status, a content type and a body, as the real APIs send.
pub fn reply(
    status: u16,
    content_type: &'static str,
    body: impl Into<String>,
) -> axum::response::Response {
    axum::response::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(axum::body::Body::from(body.into()))
        .expect("valid response")
}

/// A loopback upstream that reads requests and never answers. `asked` counts connections that sent
/// a request; `dropped` those the client closed afterwards.
pub struct Silent {
    pub addr: SocketAddr,
    pub asked: Arc<AtomicUsize>,
    pub dropped: Arc<AtomicUsize>,
}

pub async fn silent() -> Silent {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("bound address");
    let asked = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    let (a, d) = (asked.clone(), dropped.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (a, d) = (a.clone(), d.clone());
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut counted = false;
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if !counted {
                        counted = true;
                        a.fetch_add(1, Ordering::SeqCst);
                    }
                }
                if counted {
                    d.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    Silent {
        addr,
        asked,
        dropped,
    }
}

/// Asserts that `fut` (a call to a [`silent`] upstream under a short timeout of the source's own)
/// ends in [`SourceError::Timeout`], and that the upstream then sees its connection closed. Without
/// a timeout of the source's own the call would never end: a generous bound turns that into a
/// failure instead of a hung test.
pub async fn assert_times_out(
    upstream: &Silent,
    fut: impl Future<Output = Result<Vec<crate::profile::Observation>, SourceError>>,
) {
    let got = tokio::time::timeout(Duration::from_secs(30), fut).await;
    assert!(
        matches!(got, Ok(Err(SourceError::Timeout))),
        "not ended by the source's own timeout: {got:?}"
    );
    assert!(upstream.asked.load(Ordering::SeqCst) >= 1, "never asked");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while upstream.dropped.load(Ordering::SeqCst) < upstream.asked.load(Ordering::SeqCst) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the connection was never closed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The status an error maps to, for compact assertions.
pub fn is_status(r: &Result<Vec<crate::profile::Observation>, SourceError>, code: u16) -> bool {
    matches!(r, Err(SourceError::Status { status }) if *status == code)
}

/// Resolves names from a fixed table, so a public-looking name can point at loopback.
pub struct TableResolver(pub HashMap<&'static str, IpAddr>);

impl HostResolver for TableResolver {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
        let found = self.0.get(host).map(|ip| vec![SocketAddr::new(*ip, port)]);
        async move { found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host")) }
            .boxed()
    }
}
