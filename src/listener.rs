//! Accepting inbound connections under limits: at most `connections.max` open at once and
//! `connections.max_per_source` from one source address (an IPv6 source counted by its /64), a TLS handshake and
//! each request's headers within `header_read_timeout_ms` (hyper starts that clock whenever the connection
//! waits for a request, so it also closes idle HTTP/1 keep-alive connections), no connection silent for
//! longer than `idle_timeout_ms` (HTTP/2 and stalled handshakes included), and a graceful drain on stop.
//! Both listeners (SCIM and admin), plain or TLS, are served by `serve`.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use crate::config::ConnectionLimits;

/// Serves `router` on `listener` until `stop` turns true, then lets open requests finish for up to `drain`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<RustlsConfig>,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max));
    let per_source = Arc::new(PerSource::new(limits.max_per_source));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let header_timeout = Duration::from_millis(limits.header_read_timeout_ms);
    let idle = Duration::from_millis(limits.idle_timeout_ms);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(None);
    loop {
        // A free slot first: at the cap the listener stops accepting, and the kernel's backlog waits.
        let slot = tokio::select! {
            _ = stopped(&mut stop) => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // One source may not take every slot: past its own cap the connection is closed at once.
        let Some(source_slot) = PerSource::acquire(&per_source, peer.ip()) else {
            tracing::debug!(%peer, "connection closed: this source holds connections.max_per_source already");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let service = router.clone().map_request(move |mut req: axum::extract::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req
        });
        let service = TowerToHyperService::new(service);
        match &tls {
            None => {
                let io = IdleGuard::new(tcp, header_timeout, idle);
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                    drop((slot, source_slot));
                });
            }
            Some(rustls) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(rustls.get_inner());
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(header_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let io = IdleGuard::new(stream, header_timeout, idle);
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                    let _ = watcher.watch(conn.into_owned()).await;
                    drop((slot, source_slot));
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!("in-flight requests did not finish within {} s; stopping anyway", drain.as_secs());
    }
    Ok(())
}

/// Open connections per source: IPv4 by address, IPv6 by its /64 (one host usually holds a whole /64, so
/// counting single IPv6 addresses would not limit it). IPv4-mapped IPv6 addresses count as IPv4.
struct PerSource {
    max: usize,
    open: std::sync::Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection's place in its source's count; given back on drop.
struct SourceSlot {
    sources: Arc<PerSource>,
    key: IpAddr,
}

impl PerSource {
    fn new(max: usize) -> Self {
        PerSource { max: max.max(1), open: std::sync::Mutex::new(HashMap::new()) }
    }

    /// A place for one more connection from `ip`, or `None` when its source is at the cap.
    fn acquire(sources: &Arc<PerSource>, ip: IpAddr) -> Option<SourceSlot> {
        let key = source_key(ip);
        let mut open = sources.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(key).or_insert(0);
        if *n >= sources.max {
            return None;
        }
        *n += 1;
        Some(SourceSlot { sources: sources.clone(), key })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.sources.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// The key a source address is counted (and throttled) under: an IPv4 address as is, an IPv6 address by
/// its /64 network, an IPv4-mapped IPv6 address as its IPv4 address.
pub(crate) fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        },
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A connection that is closed when nothing was read or written on it for `idle`, or when its first byte
/// has not come within `first` (hyper-util reads that byte to tell HTTP/1 from HTTP/2 before hyper's own
/// header-read timeout starts, so a connection that sends nothing would otherwise wait for `idle`).
/// Progress in either direction restarts the clock.
struct IdleGuard<T> {
    inner: T,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
}

impl<T> IdleGuard<T> {
    fn new(inner: T, first: Duration, idle: Duration) -> Self {
        IdleGuard { inner, idle, timer: Box::pin(tokio::time::sleep(first)) }
    }

    fn progressed(&mut self) {
        self.timer.as_mut().reset(Instant::now() + self.idle);
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.timer.as_mut().poll(cx).is_ready()
    }
}

fn idle_error() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "connection idle for too long")
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleGuard<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.progressed();
                }
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleGuard<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.progressed();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_sources_count_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(other));
        assert_eq!(source_key("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_ne!(source_key("10.0.0.1".parse().unwrap()), source_key("10.0.0.2".parse().unwrap()));
    }

    #[test]
    fn a_source_past_its_cap_gets_no_slot_until_one_is_given_back() {
        let sources = Arc::new(PerSource::new(2));
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let neighbour: IpAddr = "2001:db8::2".parse().unwrap();
        let first = PerSource::acquire(&sources, ip).unwrap();
        let _second = PerSource::acquire(&sources, neighbour).unwrap();
        assert!(PerSource::acquire(&sources, ip).is_none(), "the same /64 is one source");
        assert!(PerSource::acquire(&sources, "192.0.2.1".parse().unwrap()).is_some());
        drop(first);
        assert!(PerSource::acquire(&sources, ip).is_some());
        drop(_second);
        assert!(sources.open.lock().unwrap().is_empty(), "no entry is kept for a source with nothing open");
    }
}
