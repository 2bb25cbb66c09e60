//! The HTTP side: connections (hyper 1, HTTP/1.1), then each request from the socket to
//! a [`JsonCall`](crate::call::JsonCall) and its answer back to a Connect response (a
//! JSON body, or for a server stream a body of envelopes, [`crate::stream`]).

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::write_timeout::WriteTimeout;
use traitrpc_core::context::{ConnectionInfo, ResponseMetadata};
use traitrpc_core::Metadata;
use traitrpc_core::PeerAddr;

use crate::call::{self, Answer, JsonCall};
use crate::codec::{Choice, Codec};
use crate::connect::{self, Code};
use crate::describe;
use crate::encoding::Encoding;
use crate::grpc;
use crate::stream;
use crate::Shared;

/// Every response's body: JSON in one piece, or a stream's envelopes as they come.
pub(crate) type HttpBody = UnsyncBoxBody<Bytes, Infallible>;

/// HTTP/2 streams one connection may have open at once (calls beyond wait in the
/// client; the gateway's in-flight limit still applies across connections).
const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// Accepts connections until `stop`, serving each on a task of `tasks`.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors, usually: wait a little rather than spin.
                tracing::warn!(%error, "gateway accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // Beyond the connection limit, the connection is closed at once.
        let Ok(slot) = Arc::clone(&shared.connections).try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let stop = stop.clone();
        let shared = Arc::clone(&shared);
        tasks.spawn(async move {
            let _slot = slot;
            serve_connection(
                TokioIo::new(stream),
                PeerAddr::Tcp(peer),
                None,
                shared,
                stop,
            )
            .await;
        });
    }
}

/// Serves one HTTP/1.1 connection until it closes, or until `stop` and then the grace
/// period (requests in progress may finish).
pub(crate) async fn serve_connection<I>(
    io: TokioIo<I>,
    peer: PeerAddr,
    identity: Option<traitrpc_core::PeerIdentity>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let connection_info = Arc::new(ConnectionInfo::new(peer.clone(), identity));
    let grace = shared.config.shutdown_grace;
    let header_timeout = shared.config.header_timeout;
    let write_timeout = shared.config.write_timeout;
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let (shared, info, peer) = (
            Arc::clone(&shared),
            Arc::clone(&connection_info),
            peer.clone(),
        );
        // Boxed: hyper spawns each HTTP/2 request's future as a task and moves it on
        // the way; a request's whole state machine (the call inside) is large, a box is
        // a pointer (memmove was 9 % of the gateway's time under gRPC load unboxed).
        Box::pin(async move { Ok::<_, Infallible>(handle(shared, info, peer, request).await) })
    });
    // hyper has no write timeout: the transport fails writes that stall.
    let io = TokioIo::new(WriteTimeout::new(io.into_inner(), write_timeout));
    // HTTP/1.1, or HTTP/2 when the connection opens with its preface (gRPC's h2c with
    // prior knowledge) or TLS negotiated it. hyper enforces the header timeout only with
    // a timer.
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = stop.cancelled() => {}
    }
    connection.as_mut().graceful_shutdown();
    // A request still arriving or running has `grace` to finish.
    let _ = tokio::time::timeout(grace, connection).await;
}

/// A JSON response.
fn json(status: StatusCode, body: &Value) -> Response<HttpBody> {
    json_text(status, body.to_string())
}

/// A JSON response whose body is encoded already.
fn json_text(status: StatusCode, body: String) -> Response<HttpBody> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)).boxed_unsync())
        .expect("a valid response")
}

/// A Connect error response.
fn error(code: Code, message: &str) -> Response<HttpBody> {
    json(
        code.http_status(),
        &connect::error_body(code, message, None),
    )
}

/// The allowed origin to echo for `request`, if CORS allows it.
fn allowed_origin(shared: &Shared, request: &Request<Incoming>) -> Option<HeaderValue> {
    let origin = request.headers().get(header::ORIGIN)?;
    let allowed = shared
        .config
        .cors_origins
        .iter()
        .any(|o| o == "*" || o.as_bytes() == origin.as_bytes());
    allowed.then(|| origin.clone())
}

async fn handle(
    shared: Arc<Shared>,
    info: Arc<ConnectionInfo>,
    peer: PeerAddr,
    request: Request<Incoming>,
) -> Response<HttpBody> {
    let origin = allowed_origin(&shared, &request);
    let mut response = if request.method() == Method::OPTIONS && origin.is_some() {
        preflight(&request)
    } else {
        answer(&shared, info, request).await
    };
    if !shared.config.cors_origins.is_empty() {
        // Answers differ by origin: caches must know.
        let headers = response.headers_mut();
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        if let Some(origin) = origin {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            // gRPC-Web's status of a call refused before it ran is in the headers.
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("grpc-status, grpc-message, grpc-status-details-bin"),
            );
        }
    }
    tracing::debug!(%peer, status = response.status().as_u16(), "gateway request");
    response
}

/// A CORS preflight: the methods and the headers the page asks for.
fn preflight(request: &Request<Incoming>) -> Response<HttpBody> {
    let mut response = Response::builder()
        .status(StatusCode::NO_CONTENT)
        .header(header::ACCESS_CONTROL_ALLOW_METHODS, "POST, GET")
        .header(header::ACCESS_CONTROL_MAX_AGE, "600");
    if let Some(asked) = request
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
    {
        response = response.header(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    response
        .body(Full::new(Bytes::new()).boxed_unsync())
        .expect("a valid response")
}

/// One call: the request read and checked, run, and answered.
async fn answer(
    shared: &Arc<Shared>,
    info: Arc<ConnectionInfo>,
    request: Request<Incoming>,
) -> Response<HttpBody> {
    if request.method() == Method::GET {
        match request.uri().path() {
            describe::SERVICES_PATH => {
                return json(StatusCode::OK, &describe::listing(&shared.router))
            }
            describe::OPENAPI_PATH => {
                return json(StatusCode::OK, &describe::openapi(&shared.router))
            }
            describe::PROTO_PATH => return proto_listing(shared),
            path if path.starts_with(describe::PROTO_PATH) => {
                if let Some(response) = proto_file(shared, &path[describe::PROTO_PATH.len()..]) {
                    return response;
                }
            }
            path => {
                if let Some(asset) = shared.config.assets.iter().find(|a| a.path == path) {
                    return Response::builder()
                        .status(StatusCode::OK)
                        .header(header::CONTENT_TYPE, asset.content_type.as_str())
                        .body(Full::new(asset.body.clone()).boxed_unsync())
                        .expect("a valid response");
                }
            }
        }
    }
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().trim_start_matches('/').to_string();
    let Some((service, method)) = path
        .rsplit_once('/')
        .map(|(s, m)| (s.to_string(), m.to_string()))
    else {
        return drained(
            shared,
            body,
            error(
                Code::NotFound,
                "the path is /{Service}/{method}, for example /Calculator/add",
            ),
        )
        .await;
    };
    let is_get = match parts.method {
        Method::POST => false,
        Method::GET => true,
        _ => {
            let mut response = error(Code::Unimplemented, "calls are POST (or GET if idempotent)");
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            return drained(shared, body, response).await;
        }
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    if !is_get {
        if let Some(grpc) = content_type.as_deref().and_then(grpc::Flavor::of) {
            return grpc::answer(shared, info, parts, body, service, method, grpc).await;
        }
    }
    let stream_type = match content_type.as_deref() {
        Some("application/connect+json") if !is_get => Some(stream::CONTENT_TYPE),
        Some("application/connect+proto") if !is_get => Some(stream::PROTO_CONTENT_TYPE),
        _ => None,
    };
    let streaming = stream_type.is_some();
    if stream_type == Some(stream::PROTO_CONTENT_TYPE)
        && crate::reflection::is_reflection(&service, &method)
    {
        return crate::reflection::serve(shared, body, crate::reflection::Framing::Connect);
    }
    // A stream's refusals are Connect stream answers: 200, the error in the end message.
    let refusal = |code: Code, message: &str| match stream_type {
        Some(content_type) => stream_error(content_type, code, message),
        None => error(code, message),
    };
    // A GET carries its message (and its codec) in the query.
    let get = if is_get {
        match connect::get_query(parts.uri.query().unwrap_or("")) {
            Ok(get) => Some(get),
            Err((code, message)) => return error(code, &message),
        }
    } else {
        None
    };
    let codec = match (&get, content_type.as_deref()) {
        (Some(get), _) => get.codec,
        (None, Some("application/proto" | "application/connect+proto")) => Codec::Proto,
        (None, Some("application/json" | "application/connect+json")) => Codec::Json,
        (None, _) => {
            let mut response = error(
                Code::Unimplemented,
                "the body must be Content-Type: application/json or application/proto (a server stream: application/connect+json or application/connect+proto; gRPC: application/grpc)",
            );
            *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
            return drained(shared, body, response).await;
        }
    };
    // Connect's clients say so (a header, or `connect=v1` in a GET's query): their JSON
    // is proto3's mapping of the exported messages.
    let proto3_json = match &get {
        Some(get) => get.connect,
        None => parts.headers.contains_key("connect-protocol-version"),
    };
    let choice = match Choice::new(shared, &service, &method, codec, proto3_json) {
        Ok(choice) => choice,
        Err((code, message)) => return drained(shared, body, refusal(code, &message)).await,
    };
    // The deadline starts when the request arrived.
    let arrived = Instant::now();
    let timeout = match connect::timeout_ms(&parts.headers) {
        Ok(Some(ms)) => std::time::Duration::from_millis(ms).min(shared.config.max_timeout),
        Ok(None) => shared.config.default_timeout,
        Err(message) => {
            return drained(shared, body, refusal(Code::InvalidArgument, &message)).await
        }
    };
    let metadata = match connect::metadata(&parts.headers) {
        Ok(metadata) => metadata,
        Err(message) => {
            return drained(shared, body, refusal(Code::InvalidArgument, &message)).await
        }
    };
    // A unary body names its encoding in Content-Encoding, a stream's envelopes in
    // Connect-Content-Encoding.
    let encoding_header = if streaming {
        "connect-content-encoding"
    } else {
        "content-encoding"
    };
    let encoding = parts
        .headers
        .get(encoding_header)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    let encoding = match Encoding::named(encoding) {
        Ok(encoding) => encoding,
        Err(message) => return drained(shared, body, refusal(Code::Unimplemented, &message)).await,
    };
    // The permit first: a body is read only for a call that may run, so bodies held in
    // memory are bounded by the in-flight limit times the body limit.
    let Ok(permit) = Arc::clone(&shared.in_flight).try_acquire_owned() else {
        let response = refusal(
            Code::ResourceExhausted,
            "the gateway is at its in-flight limit; the call did not run",
        );
        return drained(shared, body, response).await;
    };
    let (args, body_bytes) = if let Some(get) = get {
        match get
            .message(shared.config.max_body)
            .and_then(|message| choice.arguments(&message))
        {
            Ok(args) => (args, 0),
            Err((code, message)) => return error(code, &message),
        }
    } else {
        match read_body(shared, body).await {
            Ok(body) => {
                let len = body.len();
                let parsed = if streaming {
                    stream::request_body(
                        &body,
                        encoding,
                        "Connect-Content-Encoding",
                        shared.config.max_body,
                    )
                    .and_then(|message| choice.arguments(&message))
                } else {
                    encoding
                        .decode_or_refuse(&body, shared.config.max_body, "body")
                        .and_then(|body| choice.arguments(&body))
                };
                match parsed {
                    Ok(args) => (args, len),
                    Err((code, message)) => return refusal(code, &message),
                }
            }
            Err((code, message)) => return refusal(code, &message),
        }
    };
    let Some(deadline) = arrived.checked_add(timeout) else {
        return refusal(Code::InvalidArgument, "the timeout is too long");
    };
    let response_metadata = ResponseMetadata::default();
    let call = JsonCall {
        service,
        method,
        args,
        args_as_sent: choice.arguments_as_sent(),
        body_bytes,
        is_get,
        deadline,
        metadata,
        connection: info,
        request_id: shared.next_id.fetch_add(1, Ordering::Relaxed),
        stream: None,
        render: choice.render(),
        response: response_metadata.clone(),
    };
    if streaming {
        let body =
            stream::run_streaming(shared.router.clone(), call, permit, |answer, metadata| {
                Frame::data(stream::end_message(answer, metadata))
            });
        return Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, choice.stream_content_type())
            .body(body.boxed_unsync())
            .expect("a valid response");
    }
    let answer = call::run(&shared.router, call).await;
    drop(permit);
    let mut response = match answer {
        Answer::Ok(body) => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, choice.unary_content_type())
            .body(Full::new(body).boxed_unsync())
            .expect("a valid response"),
        Answer::StreamEnded => json_text(StatusCode::OK, "null".into()),
        Answer::Error {
            code,
            message,
            application_error,
        } => json(
            code.http_status(),
            &connect::error_body(code, &message, application_error),
        ),
    };
    // A unary call's response metadata: headers.
    let extra = connect::response_headers(&response_metadata.snapshot());
    response.headers_mut().extend(extra);
    response
}

/// `GET /.well-known/rrpc/proto`: the exported files' listing.
fn proto_listing(shared: &Shared) -> Response<HttpBody> {
    match &shared.proto {
        Some(proto) => json(StatusCode::OK, &describe::proto_listing(proto)),
        None => error(
            Code::NotFound,
            "the gateway has no protobuf form of its services",
        ),
    }
}

/// `GET /.well-known/rrpc/proto/{name}`: one exported `.proto` file as text.
fn proto_file(shared: &Shared, rest: &str) -> Option<Response<HttpBody>> {
    let text = describe::proto_file(shared.proto.as_ref()?, rest.strip_prefix('/')?)?;
    Some(
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from(text)).boxed_unsync())
            .expect("a valid response"),
    )
}

/// The request body, within the size and time limits; or why not.
pub(crate) async fn read_body(shared: &Shared, body: Incoming) -> Result<Bytes, (Code, String)> {
    let limit = shared.config.max_body;
    let mut collect = Box::pin(Limited::new(body, limit).collect());
    // A body that has arrived whole (a gRPC or Connect call's, usually) needs no timer.
    let collected = match futures::FutureExt::now_or_never(&mut collect) {
        Some(collected) => Ok(collected),
        None => tokio::time::timeout(shared.config.body_timeout, collect).await,
    };
    match collected {
        Err(_) => Err((
            Code::DeadlineExceeded,
            format!(
                "the request body took longer than {:?} to arrive",
                shared.config.body_timeout
            ),
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err((
            Code::ResourceExhausted,
            format!("the request body is larger than the gateway's limit of {limit} bytes"),
        )),
        Ok(Err(e)) => Err((
            Code::InvalidArgument,
            format!("the request body could not be read: {e}"),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// A stream's refusal before its call starts, as Connect's streaming protocol answers
/// every outcome: `200`, no items, the error in the end-of-stream message (JSON whatever
/// the codec), under the request's own content type (`content_type`).
fn stream_error(content_type: &'static str, code: Code, message: &str) -> Response<HttpBody> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .body(
            Full::new(stream::end_message(
                &Answer::error(code, message),
                &Metadata::new(),
            ))
            .boxed_unsync(),
        )
        .expect("a valid response")
}

/// `response`, after reading what the client sends of its body (within the body limits):
/// a client still writing its body when the answer comes would see the connection reset
/// instead of the answer.
pub(crate) async fn drained(
    shared: &Shared,
    mut body: Incoming,
    response: Response<HttpBody>,
) -> Response<HttpBody> {
    // Read and dropped frame by frame: a refused request holds no buffer (refusals at the
    // in-flight limit happen without a permit). Past the limits, stop: the connection
    // is then reset, as before.
    let limit = shared.config.max_body;
    let discard = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, Bytes::len);
            if seen > limit {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(shared.config.body_timeout, discard).await;
    response
}
