//! `tracing` spans around calls, on both sides, carrying W3C trace context
//! ([`crate::trace_context`]) so that one trace spans a chain of services:
//!
//! - [`ServerTracing`] (a server [`Middleware`]): a span `rpc.server` per call with the
//!   service, method, call id, peer and final status, and the trace the call's
//!   `traceparent` says it belongs to (a new one otherwise); it makes that trace current
//!   while the handler runs.
//! - [`ClientTracing`] (a [`ClientMiddleware`]): puts `traceparent` (a child of the
//!   current trace, or a new one) in every call's metadata, streaming ones included, and
//!   a span `rpc.client` around unary calls.
//!
//! Spans are built only when a subscriber is interested in them (`tracing`'s own
//! check); the trace context is passed on either way, so a service in the middle that
//! records nothing does not break the chain.

use tracing::field::Empty;
use tracing::Instrument;
use traitrpc_core::client::{ClientMiddleware, ClientNext};
use traitrpc_core::server::middleware::MiddlewareFuture;
use traitrpc_core::{
    Answered, ChannelFuture, Metadata, Method, Middleware, Next, OutgoingCall, Rejection,
};

use crate::labels::{outcome_name, status_name, CANCELLED, OTHER};
use crate::trace_context::{self, TraceContext};

/// A span per call on the server, and its trace current while the handler runs.
#[derive(Debug, Default, Clone, Copy)]
pub struct ServerTracing;

impl Middleware for ServerTracing {
    fn call(&self, next: Next) -> MiddlewareFuture {
        let context = next.context();
        let parent = TraceContext::from_metadata(context.metadata());
        let trace = match &parent {
            Some(parent) => parent.child(),
            None => TraceContext::new_root(),
        };
        let span = tracing::info_span!(
            "rpc.server",
            otel.kind = "server",
            rpc.service = next.service(),
            rpc.method = next.known_method().unwrap_or(OTHER),
            rpc.call_id = context.request_id(),
            net.peer = %context.peer(),
            rpc.status = Empty,
            trace_id = %trace.trace_id_hex(),
            span_id = %trace.span_id_hex(),
            parent_id = parent.as_ref().map(TraceContext::span_id_hex).as_deref(),
        );
        MiddlewareFuture::new(async move {
            // A call cancelled by its caller is dropped here, unfinished: its span then
            // closes as CANCELLED.
            let mut status = StatusOnClose::new(span.clone(), |span, status| {
                span.record("rpc.status", status);
            });
            let outcome = trace_context::scope(trace, next.run())
                .instrument(span)
                .await;
            status.set_from(&outcome);
            outcome
        })
    }
}

/// Records a server span's final status when dropped, whether its call finished or not:
/// a call its caller gave up on is dropped unfinished, and its span then closes as
/// `CANCELLED`. For server middleware that make spans (this module's and `traitrpc-otel`'s).
pub struct StatusOnClose {
    span: tracing::Span,
    status: &'static str,
    record: fn(&tracing::Span, &'static str),
}

impl StatusOnClose {
    /// Will `record` the status (a name from [`crate::labels`]) in `span` when dropped;
    /// `CANCELLED` unless told otherwise.
    pub fn new(span: tracing::Span, record: fn(&tracing::Span, &'static str)) -> Self {
        StatusOnClose {
            span,
            status: CANCELLED,
            record,
        }
    }

    /// The call ended with `outcome` (the middleware chain's): its status, `CANCELLED`
    /// if it ended without an answer.
    pub fn set_from(&mut self, outcome: &Result<Answered, Rejection>) {
        self.status = match outcome {
            Ok(answered) => answered.status().map_or(CANCELLED, status_name),
            Err(rejection) => status_name(rejection.code()),
        };
    }
}

impl Drop for StatusOnClose {
    fn drop(&mut self) {
        (self.record)(&self.span, self.status);
    }
}

/// Trace context in every call's metadata, and a span per unary call on the client.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClientTracing;

impl ClientMiddleware for ClientTracing {
    fn decorate(&self, _method: &Method, metadata: &mut Metadata) {
        let trace = match trace_context::current() {
            Some(current) => current.child(),
            None => TraceContext::new_root(),
        };
        trace.inject(metadata);
    }

    fn call<'a>(&'a self, call: OutgoingCall<'a>, next: ClientNext<'a>) -> ChannelFuture<'a> {
        let span = tracing::info_span!(
            "rpc.client",
            otel.kind = "client",
            rpc.service = call.method.service,
            rpc.method = call.method.name,
            rpc.status = Empty,
            trace_id = Empty,
            span_id = Empty,
        );
        // The ids `decorate` put in the metadata, read back only for a span that records.
        if !span.is_disabled() {
            if let Some(trace) = TraceContext::from_metadata(call.metadata) {
                span.record("trace_id", trace.trace_id_hex());
                span.record("span_id", trace.span_id_hex());
            }
        }
        Box::pin(async move {
            let outcome = next.run(call).instrument(span.clone()).await;
            span.record("rpc.status", outcome_name(&outcome));
            outcome
        })
    }
}
