//! Connections bounded where they are accepted: [`BoundedListener`], a
//! `tokio::net::TcpListener` for `axum::serve` that refuses a connection
//! over `--max-connections-per-client` or `--max-connections`.
//!
//! The request layer bounds what each client has in flight, but it sees
//! requests, not connections: a client can open thousands of keep-alive
//! connections and send nothing more on them than one refused request, and
//! each connection costs the server its socket and hyper's buffers
//! (kilobytes each, whatever the request limits say). Only the accept loop
//! sees every connection, so the bound is kept here.
//!
//! # Invariant kept here
//!
//! Each client address (an IPv6 address counting as its /64, keyed as the
//! crate keys clients) holds at most `per_client` connections, the process
//! at most `total`, and every place is given back when the connection's IO
//! ([`Connection`]) is dropped. A peer inside a trusted proxy's network has
//! no per-address limit (one proxy carries many clients); its connections
//! count towards the total.
//!
//! Why it holds:
//!
//! - a connection reaches axum only inside a [`Connection`], and a
//!   [`Connection`] is built only with the [`Place`] that [`Places::take`]
//!   returned for its peer (or none, when both limits are off);
//! - [`Places::take`] checks both limits and counts the connection in both
//!   in one critical section (one mutex over the total and the per-address
//!   map), so two accepts never both take the last place;
//! - a [`Place`] gives both counts back in its `Drop`, under the same
//!   mutex, and it is owned by the IO that hyper drives: hyper drops the
//!   IO when the connection ends, however it ends (closed by either side,
//!   an error, a timeout, shutdown, a panic unwinding its task), so the
//!   place is given back exactly once;
//! - an address's entry is removed when its count reaches 0 (and the map
//!   shrinks when mostly empty), so the map holds only addresses with a
//!   connection open, never more entries than connections.
//!
//! A refused connection takes no place: it gets a best-effort `503` (one
//! non-blocking write, which a fresh socket's empty send buffer takes
//! whole) and is closed at once, before anything is read from it. (A
//! client whose request already arrived may see a reset rather than the
//! `503`: closing a socket with unread data resets it.)

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use mcp_bounded_session::ClientKey;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// IPv6 clients are keyed by their /64, as the manager keys them (the
/// example leaves the builder's `ipv6_prefix` at its default, 64).
const IPV6_PREFIX: u8 = 64;

/// What a connection over a limit gets before it is closed.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Retry-After: 1\r\n\
Connection: close\r\n\
Content-Length: 0\r\n\
\r\n";

/// How long accepting waits after an error that is not the connection's
/// own (such as running out of file descriptors), as axum's listener does.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// The connection limits, `None` for no limit.
pub struct ConnectionLimits {
    per_client: Option<usize>,
    total: Option<usize>,
    is_trusted_proxy: Box<dyn Fn(IpAddr) -> bool + Send + Sync>,
}

impl std::fmt::Debug for ConnectionLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionLimits")
            .field("per_client", &self.per_client)
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

impl ConnectionLimits {
    /// At most `per_client` connections per client address, `total` on
    /// the whole server; peers `is_trusted_proxy` says are proxies (the
    /// manager's [`is_trusted_proxy`], for the networks its layer trusts)
    /// have no per-address limit.
    ///
    /// [`is_trusted_proxy`]: mcp_bounded_session::BoundedSessionManager::is_trusted_proxy
    pub fn new(
        per_client: Option<usize>,
        total: Option<usize>,
        is_trusted_proxy: impl Fn(IpAddr) -> bool + Send + Sync + 'static,
    ) -> Self {
        // 0 is no limit, as on the command line (and a per-address limit of
        // 0 would leave an entry of 0 behind each refusal).
        Self {
            per_client: per_client.filter(|&n| n > 0),
            total: total.filter(|&n| n > 0),
            is_trusted_proxy: Box::new(is_trusted_proxy),
        }
    }
}

/// A TCP listener that hands axum only the connections within the limits.
#[derive(Debug)]
pub struct BoundedListener {
    tcp: TcpListener,
    places: Arc<Places>,
}

impl BoundedListener {
    pub fn new(tcp: TcpListener, limits: ConnectionLimits) -> Self {
        Self {
            tcp,
            places: Arc::new(Places::new(limits)),
        }
    }
}

impl Listener for BoundedListener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        loop {
            let (tcp, peer) = match self.tcp.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            };
            match Places::take(&self.places, peer.ip()) {
                Ok(place) => return (Connection { tcp, place }, peer),
                Err(over) => refuse(tcp, peer, over),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// After a failed accept: at once for an error of that one connection
/// (the next accept waits for the next connection), else after a pause, so
/// that an error that lasts (no file descriptors left) is not retried in a
/// busy loop.
async fn accept_failed(error: io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "cannot accept a connection; trying again in 1 s");
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}

/// Which limit a connection was over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Over {
    PerClient,
    Total,
}

impl Over {
    fn name(self) -> &'static str {
        match self {
            Self::PerClient => "per_client",
            Self::Total => "total",
        }
    }
}

/// Answers 503 if the socket takes it at once, and closes the connection.
fn refuse(tcp: TcpStream, peer: SocketAddr, over: Over) {
    // Never waits: a fresh socket's send buffer is empty, so the response
    // goes out whole; if the peer is already gone, there is no one to tell.
    let _ = tcp.try_write(REFUSAL);
    tracing::debug!(%peer, limit = over.name(), "connection refused: over the limit");
    #[cfg(feature = "metrics")]
    metrics::counter!("demo_connections_refused_total", "limit" => over.name()).increment(1);
    drop(tcp);
}

/// The connections counted, against the limits.
#[derive(Debug)]
struct Places {
    limits: ConnectionLimits,
    counts: Mutex<Counts>,
    /// `demo_connections_open`: the connections counted; absent with no
    /// limit on, when nothing is counted.
    #[cfg(feature = "metrics")]
    open_gauge: Option<metrics::Gauge>,
}

#[derive(Debug, Default)]
struct Counts {
    /// Every connection counted, trusted proxies' too.
    open: usize,
    /// Per client address with at least one connection counted (never 0).
    by_client: HashMap<ClientKey, usize>,
}

impl Places {
    fn new(limits: ConnectionLimits) -> Self {
        Self {
            #[cfg(feature = "metrics")]
            open_gauge: (limits.per_client.is_some() || limits.total.is_some())
                .then(|| metrics::gauge!("demo_connections_open")),
            limits,
            counts: Mutex::new(Counts::default()),
        }
    }

    fn trusts(&self, peer: IpAddr) -> bool {
        (self.limits.is_trusted_proxy)(peer)
    }

    /// A place for a connection from `peer`, if both limits leave one
    /// (`Ok(None)`: no limit is on, nothing is counted).
    fn take(this: &Arc<Self>, peer: IpAddr) -> Result<Option<Place>, Over> {
        let limits = &this.limits;
        if limits.per_client.is_none() && limits.total.is_none() {
            return Ok(None);
        }
        let peer = peer.to_canonical();
        let client = match limits.per_client {
            Some(max) if !this.trusts(peer) => Some((ClientKey::from_ip(peer, IPV6_PREFIX), max)),
            _ => None,
        };
        let mut counts = this.counts.lock();
        if limits.total.is_some_and(|max| counts.open >= max) {
            return Err(Over::Total);
        }
        let key = match client {
            Some((key, max)) => {
                let held = counts.by_client.entry(key.clone()).or_insert(0);
                if *held >= max {
                    // `held` was at least 1 (max >= 1): the entry existed.
                    return Err(Over::PerClient);
                }
                *held += 1;
                Some(key)
            }
            None => None,
        };
        counts.open += 1;
        #[cfg(feature = "metrics")]
        if let Some(gauge) = &this.open_gauge {
            gauge.set(counts.open as f64);
        }
        drop(counts);
        Ok(Some(Place {
            places: Arc::clone(this),
            client: key,
        }))
    }

    fn give_back(&self, client: Option<&ClientKey>) {
        let mut counts = self.counts.lock();
        counts.open -= 1;
        if let Some(key) = client {
            match counts.by_client.get_mut(key) {
                Some(held) if *held > 1 => *held -= 1,
                Some(_) => {
                    counts.by_client.remove(key);
                    // Give the memory back too after a burst of many
                    // addresses: halving only once three quarters are
                    // free keeps the rehashing amortized.
                    let (len, capacity) = (counts.by_client.len(), counts.by_client.capacity());
                    if capacity > 64 && len < capacity / 4 {
                        counts.by_client.shrink_to(len * 2);
                    }
                }
                None => debug_assert!(false, "a place's address is counted while it is held"),
            }
        }
        #[cfg(feature = "metrics")]
        if let Some(gauge) = &self.open_gauge {
            gauge.set(counts.open as f64);
        }
    }

    #[cfg(test)]
    fn open(&self) -> usize {
        self.counts.lock().open
    }

    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.counts.lock().by_client.len()
    }
}

/// One counted connection's place, given back when dropped.
#[derive(Debug)]
struct Place {
    places: Arc<Places>,
    /// The address it is counted for; `None` for a trusted proxy (counted
    /// in the total only) or with no per-address limit.
    client: Option<ClientKey>,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.places.give_back(self.client.as_ref());
    }
}

/// An accepted connection: the TCP stream, and its place in the counts.
#[derive(Debug)]
pub struct Connection {
    // Dropped in this order: the socket is closed before its place is
    // given back, so the process never holds more sockets than places.
    tcp: TcpStream,
    #[allow(dead_code, reason = "held for its Drop")]
    place: Option<Place>,
}

impl Connection {
    /// The TCP stream, e.g. to set `TCP_NODELAY`.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
