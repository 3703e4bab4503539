//! Serving connections: the accept loop and its cap on open connections,
//! TLS handshakes, HTTP/1.1 through hyper with the deadlines that keep a slow
//! client from holding a connection (slowloris), and a shutdown bounded in
//! time.
//!
//! Each connection lives in a task of its own and owns one of
//! `max_connections` slots. A connection accepted with every slot taken
//! waits for one, the loop accepts no more meanwhile (later connections
//! wait in the kernel's listen backlog), and the connections idling between
//! requests are closed to make room (as nginx does); so the process never
//! runs out of file descriptors for its database. A connection is
//! closed when it takes longer than `header_read_timeout` to send a request
//! head (counted from its start, or from the first byte of a request after an
//! idle spell) or idles longer than `keep_alive_timeout` between requests.
//! Bodies are held to `request_body_timeout` by the router
//! (`http::limits`).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tower::ServiceExt as _;

use crate::config::ConnectionLimits;
use crate::metrics::ConnectionMetrics;
use crate::tls::HANDSHAKE_TIMEOUT;

/// Open files a server needs besides its client connections: the database
/// pool (SQLite holds three per connection), Redis, the listener, the
/// runtime, the log.
const RESERVED_FILES: u64 = 128;

/// Logs a warning when `max_connections` client connections would leave
/// the process fewer than [`RESERVED_FILES`] of its open-file limit
/// (`RLIMIT_NOFILE`): then a full house would make the database fail
/// instead of new connections wait.
pub fn warn_if_short_of_files(limits: &ConnectionLimits) {
    let Some(files) = rustix::process::getrlimit(rustix::process::Resource::Nofile).current else {
        return;
    };
    let wanted = u64::try_from(limits.max_connections)
        .unwrap_or(u64::MAX)
        .saturating_add(RESERVED_FILES);
    if wanted > files {
        tracing::warn!(
            max_connections = limits.max_connections,
            open_files_limit = files,
            "max_connections leaves fewer than {RESERVED_FILES} of the process's open files \
             (RLIMIT_NOFILE) to the database and Redis: lower max_connections or raise the \
             limit (systemd LimitNOFILE=, ulimit -n)"
        );
    }
}

/// What every connection of one server shares.
struct Shared {
    router: Router,
    tls: Option<TlsAcceptor>,
    limits: ConnectionLimits,
    metrics: ConnectionMetrics,
    /// True while an accepted connection waits for a slot: idle
    /// connections then close.
    full: watch::Sender<bool>,
}

/// Serves `router` on `listener` (over TLS with `tls`) until `shutdown`
/// completes; then stops accepting, closes idle connections, lets the
/// requests in flight finish for up to `limits.shutdown_timeout`, closes
/// whatever is left and returns.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    router: Router,
    limits: ConnectionLimits,
    metrics: ConnectionMetrics,
    shutdown: impl Future<Output = ()>,
) {
    #[allow(clippy::cast_precision_loss)] // at most 1,000,000
    metrics.max.set(limits.max_connections as f64);
    let shared = Arc::new(Shared {
        router,
        tls: tls.map(TlsAcceptor::from),
        limits,
        metrics,
        full: watch::Sender::new(false),
    });
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // EMFILE and the like: wait a little rather than spin.
                tracing::error!(error = %e, "accept error");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let slot = if let Ok(slot) = slots.clone().try_acquire_owned() {
            slot
        } else {
            shared.metrics.limit_reached.increment(1);
            // A kept-alive connection is a convenience for its client; a
            // client waiting for a slot is not served at all.
            shared.full.send_replace(true);
            let slot = tokio::select! {
                () = &mut shutdown => break,
                slot = slots.clone().acquire_owned() => slot,
            };
            shared.full.send_replace(false);
            match slot {
                Ok(slot) => slot,
                // Only a closed semaphore refuses, and this one never is.
                Err(_) => break,
            }
        };
        connections.spawn(connection(
            stream,
            peer,
            shared.clone(),
            stopped.clone(),
            slot,
        ));
    }
    // New connections are refused from here on.
    drop(listener);
    let _ = stop.send(true);
    let finished = tokio::time::timeout(limits.shutdown_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "shutdown_timeout passed with requests still in flight; closing their connections"
        );
        connections.shutdown().await;
    }
}

/// A connection reset or aborted before it was accepted is nothing to
/// report (as axum's own listener judges).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Counts a connection open while it lives and holds its slot.
struct Open {
    gauge: metrics::Gauge,
    _slot: OwnedSemaphorePermit,
}

impl Open {
    fn new(gauge: &metrics::Gauge, slot: OwnedSemaphorePermit) -> Self {
        gauge.increment(1.0);
        Self {
            gauge: gauge.clone(),
            _slot: slot,
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}

/// One connection, from its TLS handshake (if any) to its close.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    slot: OwnedSemaphorePermit,
) {
    let _open = Open::new(&shared.metrics.open, slot);
    let Some(acceptor) = &shared.tls else {
        return http(stream, peer, &shared, stop).await;
    };
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
    let tls = tokio::select! {
        done = handshake => match done {
            Ok(Ok(tls)) => tls,
            // Scanners, plain-HTTP clients and clients that do not trust
            // the certificate end here; nothing for an operator to do.
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                shared.metrics.handshake_timeouts.increment(1);
                return;
            }
        },
        // No request can be in flight yet.
        _ = stop.wait_for(|stop| *stop) => return,
    };
    http(tls, peer, &shared, stop).await;
}

/// HTTP/1.1 on `io` until the client closes, a deadline passes, or the
/// shutdown closes it (at once when idle, else after the response).
async fn http<I>(io: I, peer: SocketAddr, shared: &Shared, mut stop: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let service = ConnectionService {
        router: shared.router.clone(),
        peer,
        activity: activity.clone(),
    };
    let io = TokioIo::new(Watched {
        io,
        activity: activity.clone(),
    });
    // hyper's own header timer also runs while a kept-alive connection
    // idles, so it cannot give idle connections longer than slow ones:
    // `Activity` keeps both deadlines instead.
    let mut conn = pin!(
        http1::Builder::new()
            .header_read_timeout(None)
            .serve_connection(io, service)
    );
    let limits = &shared.limits;
    let mut full = shared.full.subscribe();
    let mut closing = false;
    loop {
        let deadline = activity.deadline(limits);
        let idle = matches!(deadline, Some((_, Stage::Idle)));
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|stop| *stop), if !closing => {
                // hyper closes a connection between requests at once, and
                // one with a request in flight after its response; but it
                // waits for the first request of a new connection, however
                // long that takes. Nothing was ever answered there, so
                // nothing is lost by dropping it.
                if activity.never_asked() {
                    return;
                }
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = activity.changed.notified() => {}
            // Only idle connections listen, so only they are woken.
            _ = full.wait_for(|full| *full), if idle && !closing => {
                tracing::debug!(%peer, "closing an idle connection: max_connections are open");
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep_until(deadline.map_or_else(Instant::now, |(at, _)| at)),
                if deadline.is_some() =>
            {
                if let Some((at, stage)) = activity.deadline(limits)
                    && at <= Instant::now()
                {
                    let counter = match stage {
                        Stage::Header => &shared.metrics.header_timeouts,
                        Stage::Idle => &shared.metrics.idle_timeouts,
                    };
                    counter.increment(1);
                    tracing::debug!(%peer, ?stage, "closing a connection that timed out");
                    // No request is in flight: dropping the connection closes
                    // the socket, and there is no answer owed.
                    return;
                }
            }
        }
    }
}

/// What a connection is waiting for when no request is in flight.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// The rest of a request head: since the connection opened, or since the
    /// first byte after an idle spell.
    Header,
    /// A next request, after the last response.
    Idle,
}

/// What a connection is doing, shared by its socket (reads), its service
/// (requests and their responses) and its task (the deadlines). All of them
/// run on the connection's one task, so the lock is never contended.
struct Activity {
    state: Mutex<State>,
    /// Woken on every change, so the task moves its deadline.
    changed: Notify,
}

struct State {
    /// Requests between their head and the end of their response.
    in_flight: usize,
    /// Whether any request has reached the service yet.
    asked: bool,
    /// When none is in flight: what it waits for, and since when.
    waiting: (Stage, Instant),
}

impl Activity {
    fn new() -> Self {
        Self {
            state: Mutex::new(State {
                in_flight: 0,
                asked: false,
                waiting: (Stage::Header, Instant::now()),
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing can panic while the lock is held; a poisoned state is
        // still a consistent one.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// When the connection must be closed unless something happens first,
    /// and why; `None` while a request is in flight.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<(Instant, Stage)> {
        let state = self.lock();
        if state.in_flight > 0 {
            return None;
        }
        let (stage, since) = state.waiting;
        let allowed = match stage {
            Stage::Header => limits.header_read_timeout,
            Stage::Idle => limits.keep_alive_timeout,
        };
        Some((since + allowed, stage))
    }

    /// Whether no request has reached the service yet (the connection is
    /// silent, or still sending its first head).
    fn never_asked(&self) -> bool {
        !self.lock().asked
    }

    /// Bytes arrived: on an idle connection, the head of a request has begun.
    fn read_some(&self) {
        let mut state = self.lock();
        if state.in_flight == 0 && matches!(state.waiting.0, Stage::Idle) {
            state.waiting = (Stage::Header, Instant::now());
            drop(state);
            self.changed.notify_one();
        }
    }

    /// A request's head has been read; it is in flight until the returned
    /// guard (carried by its response body) is dropped.
    fn request_started(self: &Arc<Self>) -> InFlight {
        let mut state = self.lock();
        state.in_flight += 1;
        state.asked = true;
        drop(state);
        self.changed.notify_one();
        InFlight(self.clone())
    }
}

/// One request in flight; dropping it (its response is written, or
/// abandoned) may leave the connection idle.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.waiting = (Stage::Idle, Instant::now());
        }
        drop(state);
        self.0.changed.notify_one();
    }
}

/// The socket, telling [`Activity`] when bytes arrive.
struct Watched<I> {
    io: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read_some();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The router as one connection's hyper service: each request gets the
/// peer's address (`ConnectInfo<SocketAddr>`, as axum's own server gives
/// it) and counts as in flight until its response body is done.
struct ConnectionService {
    router: Router,
    peer: SocketAddr,
    activity: Arc<Activity>,
}

type Answering = Pin<Box<dyn Future<Output = Result<Response<Answer>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = Response<Answer>;
    type Error = Infallible;
    type Future = Answering;

    fn call(&self, req: Request<Incoming>) -> Answering {
        let in_flight = self.activity.request_started();
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let answer = self.router.clone().oneshot(req);
        Box::pin(async move {
            let res = answer.await?;
            Ok(res.map(|body| Answer {
                body,
                _in_flight: in_flight,
            }))
        })
    }
}

/// A response body that keeps its request in flight until hyper has
/// written it (or dropped it).
struct Answer {
    body: Body,
    _in_flight: InFlight,
}

impl HttpBody for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
