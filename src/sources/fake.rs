//! Loopback fakes for source tests: a real HTTP server on `127.0.0.1:0` serving an axum router.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
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

pub use crate::testkit::silent::Silent;

/// A loopback upstream that reads requests and never answers.
pub async fn silent() -> Silent {
    Silent::start().await
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
    assert!(upstream.asked() >= 1, "never asked");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while upstream.dropped() < upstream.asked() {
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
