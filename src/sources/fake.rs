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

/// A handler that answers after `delay` (the test's timeout is far shorter).
pub async fn slow(delay: Duration) -> axum::response::Response {
    tokio::time::sleep(delay).await;
    reply(200, "application/json", "{}")
}

/// How long tests let a lookup run before calling it slow.
pub const SHORT: Duration = Duration::from_millis(300);

/// Whether `fut` did not finish within [`SHORT`].
pub async fn times_out<T>(fut: impl Future<Output = T>) -> bool {
    tokio::time::timeout(SHORT, fut).await.is_err()
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
