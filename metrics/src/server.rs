// SPDX-License-Identifier: MPL-2.0
//! `GET /metrics` on axum, with hyper's HTTP/1 connection driven by hand so that each
//! connection can be bounded: a scrape endpoint is reachable by anyone who can reach the port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::Registry;

/// The `Content-Type` of the Prometheus text exposition format 0.0.4, which the endpoint
/// serves (Prometheus negotiates nothing else from it).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Largest request head (request line plus headers) read; a larger one is answered with 431.
/// This is the smallest read buffer hyper allows.
const MAX_HEAD: usize = 8 * 1024;
/// How long, at most, a connection keeps being read after its answer. See [`drain`].
const DRAIN_TIME: Duration = Duration::from_millis(200);
/// How many bytes, at most, are read after the answer.
const DRAIN_BYTES: usize = 64 * 1024;

/// Bounds of the HTTP endpoint; [`serve`] uses [`Limits::DEFAULT`].
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Whole-connection deadline: reading the request, writing the answer and draining. One
    /// deadline rather than a per-read timeout, so a client trickling a byte at a time cannot
    /// hold a slot any longer than one that sends nothing.
    pub deadline: Duration,
    /// Connections served at once; the next ones wait in the kernel's accept queue.
    pub max_connections: usize,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        deadline: Duration::from_secs(5),
        max_connections: 64,
    };
}

/// A running endpoint. [`MetricsServer::shutdown`] stops it gracefully; dropping it stops
/// accepting too, and the connections in flight end on their own (within the deadline).
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets the scrapes in flight finish (each within the deadline) and
    /// frees the port.
    pub async fn shutdown(mut self) {
        self.stop.take();
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::error!("metrics: the endpoint's task failed: {e}");
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        // Dropping the sender is the stop signal.
        self.stop.take();
    }
}

/// Serves `GET /metrics` (and `HEAD /metrics`) from `registry` on `addr` with
/// [`Limits::DEFAULT`], until the returned server is shut down or dropped.
///
/// Each connection gets one request and one answer (`connection: close`); malformed
/// requests get 400, unknown paths 404, other methods 405, request heads over 8 KiB 431, and
/// clients that do not finish within 5 s are dropped. At most 64 connections are served at
/// once. Errors on one connection never reach the others or the accept loop.
pub async fn serve(registry: Arc<Registry>, addr: SocketAddr) -> anyhow::Result<MetricsServer> {
    serve_with(registry, addr, Limits::DEFAULT).await
}

/// [`serve`] with other bounds.
pub async fn serve_with(
    registry: Arc<Registry>,
    addr: SocketAddr,
    limits: Limits,
) -> anyhow::Result<MetricsServer> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding the metrics endpoint on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    tracing::info!("metrics endpoint listening on http://{bound}/metrics");
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(accept_loop(listener, router(registry), limits, stopped));
    Ok(MetricsServer {
        addr: bound,
        stop: Some(stop),
        task: Some(task),
    })
}

fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .fallback(not_found)
        .with_state(registry)
}

async fn scrape(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], registry.render())
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        "not found; metrics are at /metrics\n",
    )
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    mut stopped: oneshot::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // Connections live in a JoinSet owned by this task: a panicking connection is contained
    // in its own task, and shutdown can wait for the ones in flight.
    let mut connections = JoinSet::new();
    loop {
        // Full: stop accepting until a slot frees up; the deadline guarantees one will.
        let slot = tokio::select! {
            _ = &mut stopped => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning, and
                    // keep serving once the pressure is gone.
                    tracing::warn!("metrics: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(router.clone());
        connections.spawn(async move {
            let _slot = slot;
            connection(stream, peer, service, limits).await;
        });
        while let Some(done) = connections.try_join_next() {
            log_join_error(done);
        }
    }
    drop(listener);
    while let Some(done) = connections.join_next().await {
        log_join_error(done);
    }
}

fn log_join_error(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!("metrics: a connection task panicked: {e}");
    }
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    service: TowerToHyperService<Router>,
    limits: Limits,
) {
    let deadline = Instant::now() + limits.deadline;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(false).max_buf_size(MAX_HEAD);
    let served = http.serve_connection(TokioIo::new(&mut stream), service);
    match tokio::time::timeout_at(deadline, served).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!("metrics: connection from {peer}: {e}"),
        Err(_) => {
            // Closed with nothing (more) written.
            tracing::debug!("metrics: connection from {peer} timed out");
            return;
        }
    }
    let _ = tokio::time::timeout_at(deadline, stream.shutdown()).await;
    drain(&mut stream, deadline).await;
}

/// Reads and discards what the client still sends after the answer, briefly. Closing a socket
/// with unread input makes the kernel send a reset, which can destroy the answer before the
/// client has read it (an oversized head is the typical case); after our FIN, a well-behaved
/// client closes at once and this returns immediately.
async fn drain(stream: &mut TcpStream, deadline: Instant) {
    let until = deadline.min(Instant::now() + DRAIN_TIME);
    let mut sink = [0u8; 4096];
    let mut total = 0;
    while total < DRAIN_BYTES {
        match tokio::time::timeout_at(until, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => total += n,
            _ => break,
        }
    }
}
