//! OpenTelemetry for traitrpc services. [`OtelServer`] and [`OtelClient`] are middleware that
//! make a `tracing` span per call (`rpc.server`, `rpc.client`) whose OpenTelemetry parent
//! comes from the call's W3C `traceparent` metadata, and put the client span's context
//! into the metadata of the calls it makes. With `tracing-opentelemetry`'s layer in the
//! application's subscriber, a chain of services (client → A → B) exports as one trace.
//!
//! ```no_run
//! # #[traitrpc_core::service] pub trait Ping { async fn ping(&self) -> u8; }
//! # struct P; impl Ping for P { async fn ping(&self) -> u8 { 1 } }
//! # async fn demo(downstream: traitrpc_core::Connection) {
//! use traitrpc_otel::{OtelClient, OtelServer};
//!
//! // The application installs its subscriber with a `tracing_opentelemetry` layer, then:
//! let router = traitrpc_core::Router::from(PingServer::new(P)).layer(OtelServer);
//! // Calls made from handlers continue the handler's trace:
//! let client = traitrpc_core::Client::new(downstream).layer(OtelClient);
//! # }
//! ```
//!
//! The span fields follow the OpenTelemetry RPC conventions: `otel.name`
//! (`Service/method`), `otel.kind`, `rpc.system` (`traitrpc`), `rpc.service`, `rpc.method`,
//! `rpc.response.status_code` (a name from `traitrpc_observability::labels`), and
//! `otel.status_code` (`ERROR` for anything but `OK`). Spans are at `INFO`.
//!
//! The trace context travels exactly as `traitrpc_observability`'s own tracing layers carry
//! it, so services using either interoperate. This crate is the only one that depends on
//! OpenTelemetry (pinned to opentelemetry 0.33 and tracing-opentelemetry 0.34): its
//! breaking releases never reach `traitrpc-core`.

#![warn(missing_docs)]

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing::field::Empty;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use traitrpc_core::client::{ClientMiddleware, ClientNext};
use traitrpc_core::server::middleware::MiddlewareFuture;
use traitrpc_core::{ChannelFuture, Metadata, Method, Middleware, Next, OutgoingCall};
use traitrpc_observability::labels::{outcome_name, OTHER};
use traitrpc_observability::trace_context::{self, TraceContext};
use traitrpc_observability::tracing_layers::StatusOnClose;

/// The `rpc.system` of this framework's calls.
pub const RPC_SYSTEM: &str = "traitrpc";

/// Server middleware: an `rpc.server` span per call, a child of the caller's span.
#[derive(Debug, Default, Clone, Copy)]
pub struct OtelServer;

impl Middleware for OtelServer {
    fn call(&self, next: Next) -> MiddlewareFuture {
        let service = next.service();
        let method = next.known_method().unwrap_or(OTHER);
        let span = tracing::info_span!(
            "rpc.server",
            otel.name = %format_args!("{service}/{method}"),
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = RPC_SYSTEM,
            rpc.service = service,
            rpc.method = method,
            rpc.call_id = next.context().request_id(),
            rpc.response.status_code = Empty,
            net.peer = %next.context().peer(),
        );
        if let Some(parent) = TraceContext::from_metadata(next.context().metadata()) {
            let parent = opentelemetry::Context::new().with_remote_span_context(to_otel(&parent));
            // Fails only without the OpenTelemetry layer: the span then records as usual.
            let _ = span.set_parent(parent);
        }
        // Calls the handler makes continue this span's trace (through either crate's
        // client layers).
        let current = from_otel(&span.context());
        MiddlewareFuture::new(async move {
            // A call cancelled by its caller is dropped here, unfinished: its span then
            // ends as CANCELLED.
            let mut status = StatusOnClose::new(span.clone(), record_status);
            let run = next.run();
            let outcome = match current {
                Some(current) => trace_context::scope(current, run).instrument(span).await,
                None => run.instrument(span).await,
            };
            status.set_from(&outcome);
            outcome
        })
    }
}

/// Client middleware: an `rpc.client` span per unary call (a child of the current span),
/// whose context the call carries; streaming calls carry the current span's context.
#[derive(Debug, Default, Clone, Copy)]
pub struct OtelClient;

impl ClientMiddleware for OtelClient {
    fn decorate(&self, _method: &Method, metadata: &mut Metadata) {
        if let Some(current) =
            from_otel(&tracing::Span::current().context()).or_else(trace_context::current)
        {
            current.inject(metadata);
        }
    }

    fn call<'a>(&'a self, call: OutgoingCall<'a>, next: ClientNext<'a>) -> ChannelFuture<'a> {
        let (service, method) = (call.method.service, call.method.name);
        let span = tracing::info_span!(
            "rpc.client",
            otel.name = %format_args!("{service}/{method}"),
            otel.kind = "client",
            otel.status_code = Empty,
            rpc.system = RPC_SYSTEM,
            rpc.service = service,
            rpc.method = method,
            rpc.response.status_code = Empty,
        );
        // The server's span is a child of this one.
        let mut metadata = call.metadata.clone();
        if let Some(own) = from_otel(&span.context()) {
            own.inject(&mut metadata);
        }
        Box::pin(async move {
            let call = OutgoingCall {
                metadata: &metadata,
                ..call
            };
            let outcome = next.run(call).instrument(span.clone()).await;
            record_status(&span, outcome_name(&outcome));
            outcome
        })
    }
}

fn record_status(span: &tracing::Span, status: &'static str) {
    span.record("rpc.response.status_code", status);
    if status != "OK" {
        span.record("otel.status_code", "ERROR");
    }
}

/// A W3C trace context as OpenTelemetry's remote span context.
pub fn to_otel(context: &TraceContext) -> SpanContext {
    let state = context
        .state
        .as_deref()
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    SpanContext::new(
        TraceId::from_bytes(context.trace_id),
        SpanId::from_bytes(context.span_id),
        TraceFlags::new(context.flags),
        true,
        state,
    )
}

/// The W3C trace context of an OpenTelemetry context's span, if it has a valid one.
pub fn from_otel(context: &opentelemetry::Context) -> Option<TraceContext> {
    let span = context.span();
    let span_context = span.span_context();
    if !span_context.is_valid() {
        return None;
    }
    let state = span_context.trace_state().header();
    Some(TraceContext {
        trace_id: span_context.trace_id().to_bytes(),
        span_id: span_context.span_id().to_bytes(),
        flags: span_context.trace_flags().to_u8(),
        state: (!state.is_empty()).then_some(state),
    })
}
