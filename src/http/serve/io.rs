//! A connection's socket, watched: when a byte last moved, whether the client is refusing to take
//! the answer, and how many requests are being worked on. [`super::conn`] closes the connection
//! from these.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// What the watchdog reads; written by the socket and the requests of one connection.
pub(super) struct Activity {
    origin: Instant,
    /// Milliseconds from `origin` to the last byte read or written.
    last_io_ms: AtomicU64,
    /// Requests whose answer is not yet fully handed to hyper.
    busy: AtomicUsize,
    /// The last write found the socket full: the client is not reading.
    write_blocked: AtomicBool,
}

impl Activity {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
            last_io_ms: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            write_blocked: AtomicBool::new(false),
        })
    }

    fn touch(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_io_ms.store(ms, Ordering::Relaxed);
    }

    /// When a byte last moved.
    pub(super) fn last_io(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_io_ms.load(Ordering::Relaxed))
    }

    /// Silence may close the connection: nothing is being worked on, or the client is not taking
    /// the answer that is.
    pub(super) fn closable(&self) -> bool {
        self.busy.load(Ordering::Relaxed) == 0 || self.write_blocked.load(Ordering::Relaxed)
    }
}

/// One request being worked on, from its head until its answer's body is done or dropped.
pub(super) struct Busy(Arc<Activity>);

impl Busy {
    pub(super) fn new(activity: &Arc<Activity>) -> Self {
        activity.busy.fetch_add(1, Ordering::Relaxed);
        Self(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The socket, recording its activity.
pub(super) struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl Watched {
    pub(super) fn new(stream: TcpStream, activity: Arc<Activity>) -> Self {
        Self { stream, activity }
    }

    fn wrote(&self, result: &Poll<io::Result<usize>>) {
        match result {
            Poll::Ready(Ok(n)) if *n > 0 => {
                self.activity.write_blocked.store(false, Ordering::Relaxed);
                self.activity.touch();
            }
            Poll::Pending => self.activity.write_blocked.store(true, Ordering::Relaxed),
            Poll::Ready(_) => {}
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.wrote(&result);
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.wrote(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Raises the soft limit on open files to what `max_connections` needs (plus room for the data
/// files, upstream sockets and the listener), up to the hard limit; warns when that is not enough.
pub(super) fn raise_open_file_limit(max_connections: usize) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    const ROOM: u64 = 1024;
    let wanted = (max_connections as u64).saturating_add(ROOM);
    let mut limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= wanted {
        return;
    }
    let raised = limit.maximum.map_or(wanted, |max| max.min(wanted));
    limit.current = Some(raised);
    let now = match setrlimit(Resource::Nofile, limit) {
        Ok(()) => raised,
        Err(_) => current,
    };
    if now < wanted {
        tracing::warn!(
            open_files = now,
            max_connections,
            "The open-file limit is below server.max_connections plus room for the service's own \
             files: connections past it fail to be accepted. Raise the limit (ulimit -n) or lower \
             server.max_connections."
        );
    }
}
