//! The server loop: accepts connections up to a cap, serves each with hyper (HTTP/1.1
//! and h2c) under a header-read timeout, and on shutdown stops accepting, lets open
//! requests finish for the grace period, then closes what is left.
//!
//! poem's own `Server` exposes no header-read timeout and no connection cap, which a
//! slow or flooding client would exploit; the app itself is still a poem endpoint.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Endpoint, EndpointExt, Request};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the server enforces below the app.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub max_connections: usize,
    /// Headers of each request (and the next request on a kept-alive connection) must
    /// arrive within this.
    pub header_read_timeout: Duration,
    /// How long open requests may still run after shutdown was asked for.
    pub grace: Duration,
}

type App = Arc<dyn poem::endpoint::DynEndpoint<Output = poem::Response>>;

/// Serves `app` on `listener` until `shutdown` resolves, then drains.
pub async fn serve<E>(
    listener: TcpListener,
    app: E,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()>
where
    E: Endpoint + 'static,
{
    let local = listener.local_addr()?;
    let app: App = Arc::new(poem::endpoint::ToDynEndpoint(app.map_to_response()));
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    let draining = CancellationToken::new();
    let closing = CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.expect("never closed"),
            () = &mut shutdown => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let connection = Connection {
            app: app.clone(),
            local,
            remote,
            limits,
            draining: draining.clone(),
            closing: closing.clone(),
            _permit: permit,
        };
        tracker.spawn(connection.serve(stream));
    }
    drop(listener);
    tracker.close();
    draining.cancel();
    if tokio::time::timeout(limits.grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = tracker.len(),
            "grace period over: closing connections with requests still in flight"
        );
        closing.cancel();
        tracker.wait().await;
    }
    Ok(())
}

struct Connection {
    app: App,
    local: SocketAddr,
    remote: SocketAddr,
    limits: ServerLimits,
    draining: CancellationToken,
    closing: CancellationToken,
    /// Holds one of `max_connections` places while the connection is open.
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    async fn serve(self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let (app, local, remote) = (self.app.clone(), self.local, self.remote);
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let app = app.clone();
            async move {
                let request = Request::from((
                    request,
                    LocalAddr(local.into()),
                    RemoteAddr(remote.into()),
                    poem::http::uri::Scheme::HTTP,
                ));
                let response = app.get_response(request).await;
                Ok::<_, Infallible>(hyper::Response::<BoxBody<Bytes, std::io::Error>>::from(
                    response,
                ))
            }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout);
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        tokio::pin!(connection);
        tokio::select! {
            _ = connection.as_mut() => return,
            () = self.draining.cancelled() => {}
            () = self.closing.cancelled() => return,
        }
        connection.as_mut().graceful_shutdown();
        tokio::select! {
            _ = connection => {}
            () = self.closing.cancelled() => {}
        }
    }
}
