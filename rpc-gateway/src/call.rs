//! One JSON call through a `Router`: find the method, give it a `Context` like a native
//! call's (deadline, metadata, peer), run the router's middleware around it (so
//! authentication and tracing layers apply to HTTP callers too), then the handler. A
//! server stream's items go to the call's sink as they come, within the same deadline,
//! middleware and panic guard.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tokio::time::Instant;
use traitrpc_core::context::{self, ConnectionInfo, ResponseMetadata};
use traitrpc_core::json::{JsonMethod, JsonOutcome, MethodKind, Value};
use traitrpc_core::protocol::status;
use traitrpc_core::{Answered, Context, HandlerFuture, Metadata, Next, Rejection, Router};

use traitrpc_proto::json::JsonMapping;
use traitrpc_proto::MethodCodec;

use crate::connect::Code;

/// What a JSON call came to.
#[derive(Debug, PartialEq)]
pub(crate) enum Answer {
    /// The method's result, as the response body's message (encoded once, as the
    /// call's [`Render`] says: its length is also what observers of the call are told).
    Ok(Bytes),
    /// A server stream ended normally (its items went to the call's sink).
    StreamEnded,
    /// A Connect error, with the method's own error for an application error.
    Error {
        code: Code,
        message: String,
        application_error: Option<Value>,
    },
}

impl Answer {
    pub(crate) fn error(code: Code, message: impl Into<String>) -> Answer {
        Answer::Error {
            code,
            message: message.into(),
            application_error: None,
        }
    }
}

/// How a call's results (and a stream's items) are written.
#[derive(Debug, Clone)]
pub(crate) enum Render {
    /// serde's JSON of the value (curl, browsers: the plain JSON form).
    Serde,
    /// proto3's JSON of the response message (Connect and gRPC clients' JSON codec).
    ProtoJson(MethodCodec),
    /// The response message's protobuf bytes.
    Proto(MethodCodec),
}

impl Render {
    /// `value` as this render writes it.
    pub(crate) fn render(&self, value: Value) -> Result<Bytes, String> {
        match self {
            Render::Serde => Ok(Bytes::from(value.to_string())),
            Render::ProtoJson(codec) => {
                Ok(Bytes::from(codec.result_to_proto_json(value).to_string()))
            }
            Render::Proto(codec) => codec
                .encode_result(value)
                .map(Bytes::from)
                .map_err(|e| e.to_string()),
        }
    }
}

/// A call as the gateway received it.
pub(crate) struct JsonCall {
    pub service: String,
    pub method: String,
    /// The arguments: a JSON object by parameter name.
    pub args: Value,
    /// Whether `args` are a caller's serde JSON as sent, which may use proto3's
    /// spellings the call reads by the method's schema first
    /// ([`Choice::arguments_as_sent`](crate::codec::Choice::arguments_as_sent)).
    pub args_as_sent: bool,
    pub body_bytes: usize,
    /// `GET` requests may only call idempotent methods.
    pub is_get: bool,
    pub deadline: Instant,
    pub metadata: Metadata,
    pub connection: Arc<ConnectionInfo>,
    pub request_id: u64,
    /// Where a server stream's items go, each rendered (`None`: a unary call). The call
    /// waits while the sink is full; a closed sink (the caller went away) stops it.
    pub stream: Option<tokio::sync::mpsc::Sender<Bytes>>,
    /// How results and items are written.
    pub render: Render,
    /// Where the handler's response metadata goes (the HTTP layer reads it after).
    pub response: ResponseMetadata,
}

/// Runs `call` on `router` until it ends or its deadline passes (the handler is then
/// dropped, as a native call's is).
pub(crate) async fn run(router: &Router, call: JsonCall) -> Answer {
    let Some(service) = router.get(&call.service) else {
        return Answer::error(
            Code::Unimplemented,
            format!("no service named `{}`", call.service),
        );
    };
    let Some(json) = service.json() else {
        return Answer::error(
            Code::Unimplemented,
            format!("`{}` is not callable in JSON", call.service),
        );
    };
    let method = json
        .json_methods()
        .iter()
        .find(|m| m.name == call.method)
        .copied();
    // The router's observers (metrics) see HTTP calls as they see native ones, refused
    // ones included.
    let watch = router.watch_call(
        call.request_id,
        service.name(),
        method.map(|m| m.name),
        call.body_bytes,
    );
    let (answer, answered) = run_method(router, service, method, call).await;
    if let Some(watch) = watch {
        watch.end(&answered);
    }
    answer
}

/// A refusal before the handler runs: its answer, and its status for the observers.
fn refused(code: Code, status: u8, message: impl Into<String>) -> (Answer, Answered) {
    (Answer::error(code, message), Answered::external(status, 0))
}

/// Runs `call` of `method` (`None`: the service has none of that name).
async fn run_method(
    router: &Router,
    service: &Arc<dyn traitrpc_core::Service>,
    method: Option<JsonMethod>,
    call: JsonCall,
) -> (Answer, Answered) {
    let Some(method) = method else {
        return refused(
            Code::Unimplemented,
            status::UNKNOWN_METHOD,
            format!("`{}` has no method `{}`", call.service, call.method),
        );
    };
    let wanted = match call.stream {
        None => MethodKind::Unary,
        Some(_) => MethodKind::ServerStream,
    };
    if method.kind != wanted {
        let how = match method.kind {
            MethodKind::Unary => {
                "it is unary: call it with Content-Type: application/json or application/proto"
            }
            MethodKind::ServerStream => {
                "it streams its answer: call it with Content-Type: application/connect+json or application/connect+proto"
            }
            MethodKind::ClientStream | MethodKind::BidiStream => {
                "it takes a stream, which the gateway does not serve"
            }
        };
        return refused(
            Code::Unimplemented,
            status::INVALID_ARGUMENTS,
            format!("`{}.{}`: {how}", call.service, method.name),
        );
    }
    if call.is_get && !method.idempotent {
        return refused(
            Code::Unimplemented,
            status::INVALID_ARGUMENTS,
            format!(
                "`{}.{}` is not idempotent: call it with POST",
                call.service, method.name
            ),
        );
    }
    // A caller's serde JSON may use proto3's spellings (64-bit integers as strings,
    // bytes as base64): read into serde's, guided by the method's schema. (Arguments
    // from protobuf or proto3's JSON were read by the schema already.)
    let mut args = call.args;
    if call.args_as_sent {
        let schema = service.schema().and_then(|s| s.method(method.name));
        if let (Some(schema), Value::Object(object)) = (schema, &mut args) {
            let mapping = JsonMapping::new(&schema.types).leaving_absent_fields();
            let params = schema.params.iter().map(|p| (p.name.as_str(), &p.shape));
            *object = mapping.serde_fields_of(std::mem::take(object), params);
        }
    }
    let args = match traitrpc_core::json::named_arguments(&method, args) {
        Ok(args) => args,
        Err(refusal) => {
            let rejection = refusal.into_rejection(service.name(), method.name);
            return refused(
                Code::InvalidArgument,
                rejection.code(),
                rejection.message().to_string(),
            );
        }
    };
    let context = Context::for_transport(
        call.request_id,
        Some(call.deadline),
        service.name(),
        method.name,
        method.idempotent,
        call.metadata,
        call.connection,
    )
    .with_response_metadata(call.response);
    let service = Arc::clone(service);
    let service_name = service.name();
    // The handler's outcome, taken out of the middleware chain's end.
    let outcome: Arc<Mutex<Option<(Answer, Answered)>>> = Arc::default();
    let sink = call.stream;
    let render = call.render;
    let start = {
        let outcome = Arc::clone(&outcome);
        let method: JsonMethod = method;
        move || -> Result<HandlerFuture, Rejection> {
            let json = service.json().expect("checked above");
            let future = json
                .call_json(method.name, args)
                .map_err(|e| e.into_rejection(service_name, method.name))?;
            Ok(Box::pin(async move {
                let (answer, status, bytes) = match future.await {
                    Ok(JsonOutcome::Ok(value)) => match render.render(value) {
                        Ok(body) => {
                            let bytes = body.len();
                            (Answer::Ok(body), status::OK, bytes)
                        }
                        Err(message) => (
                            Answer::error(Code::Internal, message),
                            status::ENCODE_FAILED,
                            0,
                        ),
                    },
                    Ok(JsonOutcome::ApplicationError(error)) => (
                        Answer::Error {
                            code: Code::FailedPrecondition,
                            message: "the method returned an error".into(),
                            application_error: Some(error),
                        },
                        status::APPLICATION_ERROR,
                        0,
                    ),
                    Ok(JsonOutcome::Stream(items)) => match &sink {
                        Some(sink) => {
                            let (answer, status, bytes, sent) = forward(items, sink, &render).await;
                            let answered = Answered::external(status, bytes).with_items(sent, 0);
                            *outcome.lock().unwrap_or_else(PoisonError::into_inner) =
                                Some((answer, answered));
                            return answered;
                        }
                        // The method's kind was checked above: a unary call has no stream.
                        None => (
                            Answer::error(Code::Internal, "a unary method answered with a stream"),
                            status::INTERNAL,
                            0,
                        ),
                    },
                    Err(encode) => (
                        Answer::error(Code::Internal, encode.to_string()),
                        status::ENCODE_FAILED,
                        0,
                    ),
                };
                let answered = Answered::external(status, bytes);
                *outcome.lock().unwrap_or_else(PoisonError::into_inner) = Some((answer, answered));
                answered
            }) as HandlerFuture)
        }
    };
    let chain_context = context.clone();
    let run = async move {
        match router.middleware() {
            None => match start() {
                Ok(handler) => {
                    handler.await;
                    Ok(())
                }
                Err(rejection) => Err(rejection),
            },
            Some(layers) => {
                let next = Next::new(
                    Arc::clone(layers),
                    chain_context,
                    Some(method.name),
                    call.body_bytes,
                    Box::new(start),
                );
                next.run().await.map(|_| ())
            }
        }
    };
    // A panic in a layer or the handler fails this call (internal), not the connection.
    let run = std::panic::AssertUnwindSafe(run).catch_unwind();
    let ran = tokio::time::timeout_at(call.deadline, context::scope(context, run)).await;
    let (answer, answered) = match ran {
        Err(_) => refused(
            Code::DeadlineExceeded,
            status::DEADLINE_EXCEEDED,
            "the call's deadline passed",
        ),
        Ok(Err(panic)) => refused(
            Code::Internal,
            status::HANDLER_PANICKED,
            format!("the handler panicked: {}", panic_text(&*panic)),
        ),
        Ok(Ok(Err(rejection))) => refused(
            Code::of_status(rejection.code()),
            rejection.code(),
            rejection.message().to_string(),
        ),
        Ok(Ok(Ok(()))) => outcome
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .unwrap_or_else(|| {
                refused(
                    Code::Internal,
                    status::INTERNAL,
                    "a middleware answered the call without running it",
                )
            }),
    };
    (answer, answered)
}

/// Sends a server stream's items to `sink` until it ends, fails, or the caller goes away:
/// how it ended, its status, the bytes and the items sent.
async fn forward(
    mut items: traitrpc_core::Streaming<Value>,
    sink: &tokio::sync::mpsc::Sender<Bytes>,
    render: &Render,
) -> (Answer, u8, usize, u64) {
    let (mut bytes, mut sent) = (0, 0);
    loop {
        match items.next().await {
            None => return (Answer::StreamEnded, status::OK, bytes, sent),
            Some(Ok(item)) => {
                let text = match render.render(item) {
                    Ok(text) => text,
                    Err(message) => {
                        let answer = Answer::error(Code::Internal, message);
                        return (answer, status::ENCODE_FAILED, bytes, sent);
                    }
                };
                bytes += text.len();
                if sink.send(text).await.is_err() {
                    // Nobody reads the answer any more; dropping `items` stops the producer.
                    let answer = Answer::error(Code::Canceled, "the caller went away");
                    return (answer, status::ABORTED, bytes, sent);
                }
                sent += 1;
            }
            Some(Err(error)) => {
                let (code, status) = match &error {
                    traitrpc_core::RpcError::DeadlineExceeded => {
                        (Code::DeadlineExceeded, status::DEADLINE_EXCEEDED)
                    }
                    traitrpc_core::RpcError::Encode(_) => (Code::Internal, status::ENCODE_FAILED),
                    traitrpc_core::RpcError::HandlerPanicked { .. } => {
                        (Code::Internal, status::HANDLER_PANICKED)
                    }
                    _ => (Code::Aborted, status::ABORTED),
                };
                return (Answer::error(code, error.to_string()), status, bytes, sent);
            }
        }
    }
}

/// A panic's message, if it has one.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}
