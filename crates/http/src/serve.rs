//! The accept loop: a connection slot per accepted connection (total and per client
//! address), HTTP/1 with a header read timer and a header size cap, graceful shutdown.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower_service::Service;

use crate::limits::ServeLimits;
use crate::refuse;

/// Pause after a failed accept (out of file descriptors, say) before trying again, so
/// the loop does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Serves `router` on `listener` within `limits` until `shutdown` completes, then stops
/// accepting and waits for the open connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    limits
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes);
    let slots = Slots::new(limits);
    let refuser = refuse::Refuser::new();
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; pausing");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let slot = match slots.take(peer.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                tracing::debug!(%peer, why, "connection refused: over the connection limit");
                refuser.refuse(stream, why);
                continue;
            }
        };
        let connection =
            builder.serve_connection(TokioIo::new(stream), service(router.clone(), peer));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    tracing::debug!(
        open = graceful.count(),
        "stopped accepting; draining connections"
    );
    graceful.shutdown().await;
    Ok(())
}

/// The router as a hyper service for one connection; requests carry the peer address
/// (`ConnectInfo<SocketAddr>`), as with axum's own `serve`.
fn service(
    router: Router,
    peer: SocketAddr,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response,
    Error = Infallible,
    Future = impl Future<Output = Result<Response, Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |request: Request<Incoming>| {
        let mut router = router.clone();
        let mut request = request.map(Body::new);
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        async move { router.call(request).await }
    })
}

/// Open connections, in total and per client address.
#[derive(Debug, Clone)]
struct Slots {
    limits: ServeLimits,
    open: Arc<Mutex<Open>>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// One open connection's place; released on drop.
#[derive(Debug)]
struct Slot {
    slots: Slots,
    ip: IpAddr,
}

impl Slots {
    fn new(limits: ServeLimits) -> Self {
        Self {
            limits,
            open: Arc::default(),
        }
    }

    /// A place for a connection from `ip`, or which limit it is over.
    fn take(&self, ip: IpAddr) -> Result<Slot, &'static str> {
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.total >= self.limits.max_connections {
            return Err("the server's connection limit");
        }
        let from_ip = open.by_ip.entry(ip).or_default();
        if *from_ip >= self.limits.max_connections_per_ip {
            return Err("the connection limit per client address");
        }
        *from_ip += 1;
        open.total += 1;
        Ok(Slot {
            slots: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total -= 1;
        if let Some(n) = open.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.by_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_count_per_address_and_free_on_drop() {
        let slots = Slots::new(ServeLimits {
            max_connections: 3,
            max_connections_per_ip: 2,
            ..Default::default()
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "::ffff:10.0.0.2".parse().unwrap();
        let first = slots.take(a).unwrap();
        let _second = slots.take(a).unwrap();
        assert!(slots.take(a).unwrap_err().contains("per client address"));
        let _third = slots.take(b).unwrap();
        assert!(
            slots
                .take(b)
                .unwrap_err()
                .contains("server's connection limit")
        );
        drop(first);
        let _again = slots.take("10.0.0.2".parse().unwrap()).unwrap();
        assert_eq!(slots.open.lock().unwrap().by_ip.len(), 2);
    }
}
