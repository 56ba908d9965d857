//! The connection loop. `axum::serve` has no header read timeout, no body deadline, no idle
//! limit and no connection cap: a client trickling one header byte a second, or sending nothing,
//! held a descriptor forever. Here hyper's HTTP/1 connection is driven directly, with:
//! - a cap on connections open at once, and on those of one address (IPv6: one /64); at the
//!   global cap the oldest connection waiting for a request head is closed to admit the new
//!   one, so that one address's silent connections cannot shut everyone out;
//! - hyper's header read timeout (also the keep-alive idle limit between requests);
//! - a deadline on each request body, counted from its head;
//! - an idle limit: no byte moving either way while no request is being handled;
//! - graceful shutdown of every connection on the shutdown future, within `SHUTDOWN_GRACE`;
//! - TLS when `[tls]` is set (the handshake within the header read timeout, no plaintext on
//!   that port), and the client's address from trusted proxies' headers (`super::edge`).

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{Router, body::Body, extract::ConnectInfo};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Notify, watch},
    task::JoinSet,
};
use tower::ServiceExt;

use super::{
    edge::{ClientCert, Edge, Https, PeerAddr},
    workers::Workers,
};
use crate::{config::LimitsConfig, web::limits::address_key};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long graceful shutdown waits for open connections before dropping them: a client that
/// never finishes its answer must not hold the process up.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// One open connection, as the accept loop tracks it.
struct Conn {
    addr: IpAddr,
    activity: Arc<Activity>,
    /// Told when the connection is closed to admit a newcomer.
    evict: Notify,
}

/// The open connections, in accept order, and how many each address holds.
#[derive(Default)]
struct Open {
    next: u64,
    conns: BTreeMap<u64, Arc<Conn>>,
    per_addr: HashMap<IpAddr, usize>,
}

impl Open {
    fn remove(&mut self, seq: u64) -> Option<Arc<Conn>> {
        let conn = self.conns.remove(&seq)?;
        if let Some(n) = self.per_addr.get_mut(&conn.addr) {
            *n -= 1;
            if *n == 0 {
                self.per_addr.remove(&conn.addr);
            }
        }
        Some(conn)
    }

    /// Admits a connection from `peer`: its number and handle, or `None` if it must be closed.
    /// One address (IPv6: one /64) holds at most `per_addr_max`; when all `max` are taken, the
    /// oldest connection waiting for a request head is closed to make room, so that silent
    /// connections cannot shut everyone else out.
    /// A trusted proxy carries many clients' connections: it is exempt from the per-address cap
    /// (its clients' addresses are only known once a request head arrives).
    fn admit(
        &mut self,
        peer: IpAddr,
        limits: &LimitsConfig,
        proxy: bool,
    ) -> Option<(u64, Arc<Conn>)> {
        let addr = address_key(peer);
        if !proxy
            && self.per_addr.get(&addr).copied().unwrap_or(0) >= limits.max_connections_per_address
        {
            metrics::counter!("credgate_connections_refused_total").increment(1);
            return None;
        }
        if self.conns.len() >= limits.max_connections {
            let oldest = self
                .conns
                .iter()
                .find(|(_, c)| c.activity.waiting_for_head())
                .map(|(seq, _)| *seq);
            let Some(evicted) = oldest.and_then(|seq| self.remove(seq)) else {
                metrics::counter!("credgate_connections_refused_total").increment(1);
                return None;
            };
            metrics::counter!("credgate_connections_evicted_total").increment(1);
            evicted.evict.notify_one();
        }
        let conn = Arc::new(Conn {
            addr,
            activity: Arc::new(Activity::default()),
            evict: Notify::new(),
        });
        let seq = self.next;
        self.next += 1;
        self.conns.insert(seq, conn.clone());
        *self.per_addr.entry(addr).or_default() += 1;
        Some((seq, conn))
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets open connections finish
/// their requests and waits for them, for `SHUTDOWN_GRACE` at most. Accepts here; each
/// connection is then served on the serving thread `workers` places it on.
pub(super) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &LimitsConfig,
    edge: Edge,
    workers: &Workers,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let limits = Arc::new(limits.clone());
    let open = Arc::new(Mutex::new(Open::default()));
    let mut tasks = JoinSet::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            // Reap finished connections, so the set holds only open ones.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, most likely: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let admitted = lock(&open).admit(peer.ip(), &limits, edge.trusts(peer.ip()));
        let Some((seq, conn)) = admitted else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // Out of this loop's reactor, into the serving thread's (`from_std` below).
        let Ok(stream) = stream.into_std() else {
            lock(&open).remove(seq);
            continue;
        };
        let (on, placed) = workers.place();
        let (router, limits, stop, open, edge) = (
            router.clone(),
            limits.clone(),
            stop_rx.clone(),
            open.clone(),
            edge.clone(),
        );
        tasks.spawn_on(
            async move {
                let _placed = placed;
                if let Ok(stream) = TcpStream::from_std(stream) {
                    tokio::select! {
                        () = accepted(stream, peer, router, &limits, &edge, stop, conn.activity.clone()) => {}
                        () = conn.evict.notified() => tracing::debug!("waiting connection closed for a newcomer"),
                    }
                }
                lock(&open).remove(seq);
            },
            on,
        );
    }
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = tasks.len(),
            "shutdown grace over: dropping open connections"
        );
        tasks.shutdown().await;
    }
}

fn lock(open: &Mutex<Open>) -> std::sync::MutexGuard<'_, Open> {
    open.lock().unwrap_or_else(|p| p.into_inner())
}

/// An accepted socket: plain HTTP, or HTTPS once the handshake is done. A handshake that does
/// not finish within the header read timeout is closed like a silent client; a client that
/// speaks plaintext to the TLS port fails the handshake and gets no answer.
async fn accepted(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: &LimitsConfig,
    edge: &Edge,
    stop: watch::Receiver<bool>,
    activity: Arc<Activity>,
) {
    let Some(tls) = &edge.tls else {
        return connection(stream, peer, None, router, limits, edge, stop, activity).await;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
    let handshake = tokio::time::timeout(limits.header_read_timeout(), acceptor.accept(stream));
    let stream = match handshake.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            metrics::counter!("credgate_tls_handshake_failures_total").increment(1);
            return;
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            return;
        }
    };
    let cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| ClientCert::of(c.as_ref()));
    activity.touch();
    connection(
        stream,
        peer,
        Some(cert),
        router,
        limits,
        edge,
        stop,
        activity,
    )
    .await
}

// Nine arguments: the connection's socket, identity and settings, each needed by the service
// closure or the idle loop; bundling them would only move the list into a struct literal.
#[allow(clippy::too_many_arguments)]
async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    // `None`: plain HTTP; `Some(cert)`: TLS, with the client's certificate if it sent one.
    tls: Option<Option<ClientCert>>,
    router: Router,
    limits: &LimitsConfig,
    edge: &Edge,
    mut stop: watch::Receiver<bool>,
    activity: Arc<Activity>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let edge = edge.clone();
    let body_timeout = limits.body_read_timeout();
    let seen = activity.clone();
    let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let (router, seen) = (router.clone(), seen.clone());
        let client = edge.client_addr(peer, req.headers());
        let tls = tls.clone();
        async move {
            let busy = seen.busy();
            let deadline = tokio::time::Instant::now() + body_timeout;
            let mut req = req.map(|body| Body::new(Deadline::new(body, deadline)));
            // Every reader of the client's address (rate limits, login lock, audit) takes
            // `ConnectInfo`: behind a trusted proxy it is the forwarded client.
            req.extensions_mut().insert(ConnectInfo(client));
            req.extensions_mut().insert(PeerAddr(peer));
            if let Some(cert) = tls {
                req.extensions_mut().insert(Https);
                if let Some(cert) = cert {
                    req.extensions_mut().insert(cert);
                }
            }
            let res = router.oneshot(req).await?;
            // Busy until the answer's body is written (a streamed export, a large list), not
            // only until its head: eviction and the idle check must not cut it off.
            Ok::<_, std::convert::Infallible>(res.map(|body| Held { body, _busy: busy }))
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout())
        .keep_alive(true)
        .serve_connection(io, svc);
    tokio::pin!(conn);
    let idle = limits.idle_timeout();
    let mut check = tokio::time::interval((idle / 4).max(Duration::from_millis(10)));
    let mut stopping = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = check.tick() => {
                if activity.idle_for() >= idle {
                    tracing::debug!("idle connection closed");
                    return;
                }
            }
        }
    }
}

/// When a connection last moved a byte, and how many of its requests are being handled.
struct Activity {
    base: Instant,
    last_ms: AtomicU64,
    handling: AtomicUsize,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
            handling: AtomicUsize::new(0),
        }
    }
}

impl Activity {
    /// No request is being handled: the connection waits for a head (its first, or the next
    /// on a kept-alive connection), and closing it loses no answer.
    fn waiting_for_head(&self) -> bool {
        self.handling.load(Ordering::Relaxed) == 0
    }

    fn touch(&self) {
        self.last_ms
            .store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Zero while a request is being handled: a slow store is not an idle client.
    fn idle_for(&self) -> Duration {
        if self.handling.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.base.elapsed().saturating_sub(last)
    }

    fn busy(self: &Arc<Self>) -> Busy {
        self.handling.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }
}

struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.handling.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its connection marked busy until hyper has written it all (or
/// dropped it).
struct Held {
    body: Body,
    _busy: Busy,
}

impl http_body::Body for Held {
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

/// The socket (or its TLS session), noting each byte that moves.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body that must have arrived by a deadline (tower-http's body timeout restarts
/// with every frame, so a trickle of one byte a second would never end).
struct Deadline {
    body: Incoming,
    deadline: tokio::time::Instant,
    /// Armed the first time the body is not ready: bodies read at once cost no timer.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Deadline {
    fn new(body: Incoming, deadline: tokio::time::Instant) -> Self {
        Self {
            body,
            deadline,
            sleep: None,
        }
    }
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err("the request body did not arrive in time".into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn connect_from(ip: [u8; 4], to: SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((ip, 0))).unwrap();
        socket.connect(to).await.unwrap()
    }

    /// Reads until `needle` has arrived (or the peer closed): what arrived.
    async fn read_until(c: &mut TcpStream, needle: &[u8]) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(needle.len()).any(|w| w == needle) {
            match tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        got
    }

    /// An answer still being written is a busy connection: at the cap, a newcomer makes room
    /// by closing a connection that waits for a head, never one whose body is on its way.
    #[tokio::test]
    async fn at_the_cap_a_response_still_streaming_is_not_evicted() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let rx = Arc::new(Mutex::new(Some(rx)));
        let router = Router::new()
            .route(
                "/stream",
                get(move || {
                    let rx = rx.lock().unwrap().take().expect("one stream");
                    let body = futures_util::stream::unfold(rx, |mut rx| async move {
                        rx.recv().await.map(|chunk| (chunk, rx))
                    });
                    async move { Body::from_stream(body) }
                }),
            )
            .route("/ok", get(|| async { "ok" }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = LimitsConfig {
            max_connections: 2,
            ..LimitsConfig::default()
        };
        tokio::spawn(async move {
            let workers = crate::web::workers::start(2, "t").unwrap();
            serve(
                listener,
                router,
                &limits,
                Edge::default(),
                &workers,
                std::future::pending(),
            )
            .await
        });

        let mut streaming = connect_from([127, 0, 0, 3], addr).await;
        streaming
            .write_all(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        tx.send(Ok(Bytes::from_static(b"first-"))).await.unwrap();
        read_until(&mut streaming, b"first-").await;
        let _silent = connect_from([127, 0, 0, 4], addr).await;
        tokio::time::sleep(Duration::from_millis(50)).await;

        let mut newcomer = connect_from([127, 0, 0, 5], addr).await;
        newcomer
            .write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = read_until(&mut newcomer, b"ok").await;
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");

        tx.send(Ok(Bytes::from_static(b"last"))).await.unwrap();
        drop(tx);
        let rest = read_until(&mut streaming, b"last").await;
        assert!(
            rest.windows(4).any(|w| w == b"last"),
            "the streaming answer was cut off: {rest:?}"
        );
    }
}
