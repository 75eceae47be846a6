//! A hung upstream: it takes connections, reads what is sent and never answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::AsyncReadExt;

/// A loopback upstream that reads requests and never answers. It counts the connections that sent
/// a request, and those the client closed afterwards (a timeout that really cut the call).
#[derive(Clone)]
pub struct Silent {
    pub addr: SocketAddr,
    pub url: String,
    asked: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

impl Silent {
    pub async fn start() -> Self {
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
                    // Reads until the client closes its side (0) or resets (an error).
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
        Self {
            addr,
            url: format!("http://{addr}"),
            asked,
            dropped,
        }
    }

    /// Connections that sent a request.
    pub fn asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }

    /// Connections that sent a request and were then closed by the client.
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }
}
