//! Hostile and broken clients against the real server on loopback: slow heads and bodies, silent and
//! non-reading connections, floods over the connection caps, overload, clients behind a proxy,
//! cross-site form posts, and SIGTERM's drain. Each test asserts status codes, what the service still
//! answers, memory, and what was (not) recorded.
//!
//! Loopback is all of 127.0.0.0/8: a test that needs several client addresses binds its sockets to
//! 127.0.0.2, 127.0.0.3, ... so that the per-address caps see distinct clients.

mod connections;
mod drain;
mod overload;
mod proxy;
mod upstreams;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The longest a condition the test waits for may take on a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(60);

/// The socket address of a server URL (`http://127.0.0.1:PORT`).
pub fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://")
        .parse()
        .expect("server url is an address")
}

/// A loopback client address other than 127.0.0.1: `127.0.0.{n}`.
pub fn loopback(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// A raw connection to `server` from `from`.
pub async fn connect_from(from: Ipv4Addr, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("bind a loopback client address");
    socket.connect(server).await.expect("connect")
}

pub use crate::helpers::wait_until;

/// Reads one response head from `stream`: its status and its header block (lower-cased).
pub async fn read_head(stream: &mut (impl AsyncRead + Unpin)) -> Option<(u16, String)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut byte))
            .await
            .expect("an answer or a close in time")
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    }
    let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    Some((status, text))
}

/// Whether the server closed `stream` (end of file or reset) before `within`; anything it sends
/// first is read and dropped.
pub async fn closed_within(stream: &mut (impl AsyncRead + Unpin), within: Duration) -> bool {
    let mut sink = [0u8; 64 * 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Sends the head of an opt-out whose body says it is `length` bytes long, and its first byte.
pub async fn start_slow_optout(stream: &mut (impl AsyncWrite + Unpin), length: usize) {
    let head = format!(
        "POST /v1/optout HTTP/1.1\r\nhost: enrichd\r\ncontent-type: application/json\r\n\
         content-length: {length}\r\n\r\n{{"
    );
    stream
        .write_all(head.as_bytes())
        .await
        .expect("send the head");
}

/// This process's resident memory, in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}
