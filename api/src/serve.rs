//! The HTTP/1.1 server loop, with the limits `axum::serve` does not have.
//!
//! A client that opens connections and never finishes a request costs a descriptor and a task
//! for as long as it likes, and enough of them (a few hundred under a 256-descriptor limit)
//! starve everyone else. So:
//! - **header-read timeout**: hyper closes a connection whose request head is not complete
//!   this long after it began waiting for it (a byte a second does not keep it open);
//! - **idle timeout**: a connection with no request in progress that sends nothing for this
//!   long is closed (a kept-alive connection, or one that opened and stayed silent);
//! - **body timeout**: set on the router (`RequestBodyTimeoutLayer`), so a request whose body
//!   does not arrive in time is answered and its connection closed;
//! - **connection cap**: at most `max_connections` are served at once. A connection beyond it
//!   evicts the oldest connection that has no request in progress; when every one is busy,
//!   accepting waits, and new clients wait in the kernel's backlog, where they cost no
//!   descriptor of ours. The default cap leaves room under the process's descriptor limit for
//!   the database pool, NATS and the log.
//!
//! At shutdown, accepting stops, connections with no request in progress are dropped at once
//! (half-sent requests included), and requests in progress finish; the caller bounds that
//! wait with the shutdown timeout.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// The server's connection settings, as configured (see the module doc).
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionSettings {
    /// Seconds a client has to send a request's headers, from when the connection starts
    /// waiting for them; also the longest a kept-alive connection waits for its next request.
    #[arg(long, env = "TWOFOLD_HEADER_READ_TIMEOUT", default_value_t = 10)]
    pub header_read_timeout: u64,
    /// Seconds a request's body may take to arrive in full.
    #[arg(long, env = "TWOFOLD_BODY_READ_TIMEOUT", default_value_t = 10)]
    pub body_read_timeout: u64,
    /// Seconds a request may take from reaching the router to its answer, body included;
    /// past it, 503 `service.unavailable` (see [`crate::http::deadline`]). It must exceed
    /// the body-read timeout.
    #[arg(long, env = "TWOFOLD_REQUEST_TIMEOUT", default_value_t = 15)]
    pub request_timeout: u64,
    /// Seconds a connection with no request in progress may stay silent before it is closed.
    #[arg(long, env = "TWOFOLD_IDLE_TIMEOUT", default_value_t = 5)]
    pub idle_timeout: u64,
    /// Connections served at once; by default the descriptor limit less what the process
    /// needs besides (the database pool and 64 more).
    #[arg(long, env = "TWOFOLD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
}

impl ConnectionSettings {
    /// The limits of the server loop, with the cap derived when none is set.
    pub fn limits(&self, pool_connections: u32) -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(self.header_read_timeout.max(1)),
            idle_timeout: Duration::from_secs(self.idle_timeout.max(1)),
            max_connections: self
                .max_connections
                .unwrap_or_else(|| default_max_connections(pool_connections))
                .max(1),
        }
    }

    /// How long a request body may take.
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_secs(self.body_read_timeout.max(1))
    }

    /// How long a request may take in all.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout)
    }

    /// Whether the request deadline leaves a body all of its read timeout: otherwise a slow
    /// body would get the deadline's 503 instead of its own answer.
    pub fn check(&self) -> Result<(), String> {
        if self.request_timeout > self.body_read_timeout.max(1) {
            Ok(())
        } else {
            Err(format!(
                "TWOFOLD_REQUEST_TIMEOUT ({} s) must exceed TWOFOLD_BODY_READ_TIMEOUT ({} s)",
                self.request_timeout, self.body_read_timeout
            ))
        }
    }
}

/// The limits of the server loop (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest wait for a complete request head.
    pub header_read_timeout: Duration,
    /// Longest silence of a connection with no request in progress.
    pub idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

/// Descriptors kept free under the process's limit when the cap is derived from it: the
/// database pool, NATS, the listener, log files and some slack.
const RESERVED_DESCRIPTORS: usize = 64;

/// The connection cap when none is configured: the soft descriptor limit less what the
/// process needs besides connections (and the pool), at least 16; 1024 where the limit
/// cannot be read.
pub fn default_max_connections(pool_connections: u32) -> usize {
    let reserved = RESERVED_DESCRIPTORS + usize::try_from(pool_connections).unwrap_or(0);
    open_files_limit().map_or(1024, |limit| limit.saturating_sub(reserved).max(16))
}

/// The soft `RLIMIT_NOFILE` of this process, from `/proc/self/limits` (Linux).
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// One connection as the loop sees it.
struct Connection {
    /// Requests of this connection in progress (handed to the router, answer not yet sent).
    busy: AtomicUsize,
    /// Milliseconds since `opened` when the client last sent a byte.
    last_read_ms: AtomicU64,
    opened: Instant,
    /// Asks the connection to close if it has no request in progress.
    evict: Notify,
}

impl Connection {
    fn new() -> Self {
        Self {
            busy: AtomicUsize::new(0),
            last_read_ms: AtomicU64::new(0),
            opened: Instant::now(),
            evict: Notify::new(),
        }
    }

    fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Acquire) > 0
    }

    fn touch(&self) {
        let elapsed = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_read_ms.store(elapsed, Ordering::Release);
    }

    /// When the connection will have been silent for `idle`.
    fn idle_deadline(&self, idle: Duration) -> Instant {
        self.opened + Duration::from_millis(self.last_read_ms.load(Ordering::Acquire)) + idle
    }
}

/// The open connections, oldest first.
#[derive(Default)]
struct Registry {
    next: AtomicU64,
    open: Mutex<BTreeMap<u64, Arc<Connection>>>,
}

impl Registry {
    fn add(&self, connection: Arc<Connection>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, connection);
        id
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Asks the oldest connection with no request in progress to close; false if every
    /// connection is busy.
    fn evict_oldest_idle(&self) -> bool {
        let open = self.lock();
        match open.values().find(|connection| !connection.is_busy()) {
            Some(connection) => {
                connection.evict.notify_one();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Connection>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves, then until the
/// requests in progress are answered. Dropping the returned future closes every connection.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let registry = Arc::new(Registry::default());
    let (stopping, stop) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
            // Reap finished connections as they end, so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors (or a connection reset before it was accepted): wait a
                // little rather than spin; the connections being closed free descriptors.
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if !registry.evict_oldest_idle() {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection cap reached with every connection busy: accepting waits"
                    );
                }
                tokio::select! {
                    () = &mut shutdown => break,
                    permit = Arc::clone(&permits).acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                }
            }
        };
        let connection = Arc::new(Connection::new());
        let id = registry.add(Arc::clone(&connection));
        let (router, registry, stop) = (router.clone(), Arc::clone(&registry), stop.clone());
        connections.spawn(async move {
            serve_connection(stream, peer, router, &connection, limits, stop).await;
            registry.remove(id);
            drop(permit);
        });
    }
    drop(listener);
    let _ = stopping.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Serves one connection until it closes, is evicted, times out or the server stops.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    connection: &Arc<Connection>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let tracked = Arc::clone(connection);
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        let in_progress = InProgress::start(Arc::clone(&tracked));
        let router = router.clone();
        async move {
            let response = router.oneshot(request).await;
            drop(in_progress);
            response
        }
    });
    let io = TokioIo::new(Tracked {
        stream,
        connection: Arc::clone(connection),
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(served);
    let mut draining = false;
    loop {
        // A connection with a request in progress is not idle: look again a whole idle timeout
        // later (its answer resets the clock), rather than at a deadline already past.
        let idle_deadline = if connection.is_busy() {
            Instant::now() + limits.idle_timeout
        } else {
            connection.idle_deadline(limits.idle_timeout)
        };
        tokio::select! {
            result = served.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, %peer, "connection closed with an error");
                }
                return;
            }
            () = connection.evict.notified(), if !draining => {
                if !connection.is_busy() {
                    tracing::debug!(%peer, "idle connection evicted at the connection cap");
                    return;
                }
            }
            () = tokio::time::sleep_until(idle_deadline.into()), if !draining => {
                if !connection.is_busy()
                    && connection.idle_deadline(limits.idle_timeout) <= Instant::now()
                {
                    tracing::debug!(%peer, "idle connection closed");
                    return;
                }
            }
            changed = stop.changed(), if !draining => {
                if changed.is_err() || *stop.borrow() {
                    if !connection.is_busy() {
                        return;
                    }
                    // The request in progress is answered, then the connection closes.
                    served.as_mut().graceful_shutdown();
                    draining = true;
                }
            }
        }
    }
}

/// A request of a connection in progress, from the moment its head is read until its
/// answer is handed back (also when the answer future is dropped).
struct InProgress(Arc<Connection>);

impl InProgress {
    fn start(connection: Arc<Connection>) -> Self {
        connection.busy.fetch_add(1, Ordering::AcqRel);
        Self(connection)
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A client socket that notes when its client last sent something.
struct Tracked {
    stream: TcpStream,
    connection: Arc<Connection>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.connection.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
