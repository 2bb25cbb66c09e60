//! The admin HTTP listener (HTTP/1.1, hyper 1): one call starts it next to a server.
//!
//! | path | answers |
//! |---|---|
//! | `GET /metrics` | every metric, OpenMetrics text format (`application/openmetrics-text`), when [`Admin::metrics`] was given |
//! | `GET /healthz` | `200 ok` while the process serves HTTP at all (liveness) |
//! | `GET /readyz` | `200 serving` if the server's health service says the whole server (`""`) is SERVING, else `503` with the status (readiness: a graceful shutdown turns it 503 first) |
//!
//! Anything else is `404`; a method other than GET or HEAD is `405`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use traitrpc_core::health::{HealthReporter, ServingStatus};

/// What the admin listener serves.
#[derive(Clone, Debug, Default)]
pub struct Admin {
    #[cfg(feature = "metrics")]
    metrics: Option<crate::metrics::Metrics>,
    health: Option<HealthReporter>,
}

impl Admin {
    /// Nothing but `/healthz` (and `/readyz` answering 200).
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `metrics` at `/metrics`.
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Answers `/readyz` from `health` (a server's [`HealthReporter`]).
    pub fn health(mut self, health: HealthReporter) -> Self {
        self.health = Some(health);
        self
    }

    fn answer(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        }
        match request.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => {
                let status = self
                    .health
                    .as_ref()
                    .map_or(ServingStatus::Serving, |h| h.status(""));
                if status == ServingStatus::Serving {
                    text(StatusCode::OK, "serving\n")
                } else {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &format!("{status:?}\n").to_lowercase(),
                    )
                }
            }
            #[cfg(feature = "metrics")]
            "/metrics" => match &self.metrics {
                Some(metrics) => Response::builder()
                    .status(StatusCode::OK)
                    .header(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )
                    .body(Full::new(Bytes::from(metrics.encode())))
                    .expect("a valid response"),
                None => text(StatusCode::NOT_FOUND, "no metrics here\n"),
            },
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}

/// A running admin listener; dropping it leaves it running, [`AdminHandle::shutdown`]
/// stops it.
#[derive(Debug)]
pub struct AdminHandle {
    local_addr: SocketAddr,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl AdminHandle {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops listening and waits for the requests in progress.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Binds `addr` and serves `admin` there, on the current tokio runtime.
pub async fn serve(addr: impl ToSocketAddrs, admin: Admin) -> std::io::Result<AdminHandle> {
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let admin = Arc::new(admin);
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let (accept_stop, connections) = (stop.clone(), tasks.clone());
    tasks.spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = accept_stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, _)) = accepted else {
                continue;
            };
            let admin = Arc::clone(&admin);
            let stop = accept_stop.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let response = admin.answer(&request);
                    async move { Ok::<_, Infallible>(response) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(connection);
                tokio::select! {
                    _ = connection.as_mut() => return,
                    _ = stop.cancelled() => {}
                }
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            });
        }
    });
    Ok(AdminHandle {
        local_addr,
        stop,
        tasks,
    })
}
