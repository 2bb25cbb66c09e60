//! The HTTP side: connections (hyper 1, HTTP/1.1), then each request from the socket to
//! a [`JsonCall`](crate::call::JsonCall) and its answer back to a Connect response (a
//! JSON body, or for a server stream a body of envelopes, [`crate::stream`]).

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::write_timeout::WriteTimeout;
use traitrpc_core::context::ConnectionInfo;
use traitrpc_core::PeerAddr;

use crate::call::{self, Answer, JsonCall};
use crate::connect::{self, Code};
use crate::describe;
use crate::encoding::Encoding;
use crate::stream::{self, Envelopes};
use crate::Shared;

/// Every response's body: JSON in one piece, or a stream's envelopes as they come.
type HttpBody = UnsyncBoxBody<Bytes, Infallible>;

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
        async move { Ok::<_, Infallible>(handle(shared, info, peer, request).await) }
    });
    // hyper has no write timeout: the transport fails writes that stall.
    let io = TokioIo::new(WriteTimeout::new(io.into_inner(), write_timeout));
    // hyper enforces the header timeout only with a timer.
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(io, service);
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
    let streaming = !is_get && content_type.as_deref() == Some(stream::CONTENT_TYPE);
    // A stream's refusals are Connect stream answers: 200, the error in the end message.
    let refusal = |code: Code, message: &str| {
        if streaming {
            stream_error(code, message)
        } else {
            error(code, message)
        }
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
    if !is_get && !streaming && content_type.as_deref() != Some("application/json") {
        let mut response = error(
            Code::Unimplemented,
            "the body must be Content-Type: application/json (a server stream: application/connect+json)",
        );
        *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return drained(shared, body, response).await;
    }
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
    let (args, body_bytes) = if is_get {
        match get_message(parts.uri.query().unwrap_or(""), shared.config.max_body) {
            Ok(args) => (args, 0),
            Err((code, message)) => return error(code, &message),
        }
    } else {
        match read_body(shared, body).await {
            Ok(body) => {
                let len = body.len();
                let parsed = if streaming {
                    stream::parse_arguments(&body, encoding, shared.config.max_body)
                } else {
                    encoding
                        .decode_or_refuse(&body, shared.config.max_body, "body")
                        .and_then(|body: std::borrow::Cow<'_, [u8]>| {
                            parse(&body).map_err(|message| (Code::InvalidArgument, message))
                        })
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
    let mut call = JsonCall {
        service,
        method,
        args,
        body_bytes,
        is_get,
        deadline,
        metadata,
        connection: info,
        request_id: shared.next_id.fetch_add(1, Ordering::Relaxed),
        stream: None,
    };
    if streaming {
        // The response body runs the call while its items stream out (so the call ends
        // when the caller leaves, and shutdown waits for it with the connection); it
        // holds the in-flight permit until the call ends. The body ends with how it ended.
        let (items, items_out) = tokio::sync::mpsc::channel(stream::SINK_CAPACITY);
        call.stream = Some(items);
        let shared = Arc::clone(shared);
        let run =
            Box::pin(async move { stream::end_message(&call::run(&shared.router, call).await) });
        return Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, stream::CONTENT_TYPE)
            .body(Envelopes::new(items_out, run, permit).boxed_unsync())
            .expect("a valid response");
    }
    let answer = call::run(&shared.router, call).await;
    drop(permit);
    match answer {
        Answer::Ok(body) => json_text(StatusCode::OK, body),
        Answer::StreamEnded => json_text(StatusCode::OK, "null".into()),
        Answer::Error {
            code,
            message,
            application_error,
        } => json(
            code.http_status(),
            &connect::error_body(code, &message, application_error),
        ),
    }
}

/// The request body, within the size and time limits; or why not.
async fn read_body(shared: &Shared, body: Incoming) -> Result<Bytes, (Code, String)> {
    let limit = shared.config.max_body;
    let collect = Limited::new(body, limit).collect();
    match tokio::time::timeout(shared.config.body_timeout, collect).await {
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
/// every outcome: `200`, no items, the error in the end-of-stream message.
fn stream_error(code: Code, message: &str) -> Response<HttpBody> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, stream::CONTENT_TYPE)
        .body(Full::new(stream::end_message(&Answer::error(code, message))).boxed_unsync())
        .expect("a valid response")
}

/// The arguments in a body: a JSON value (an empty body is `{}`).
fn parse(body: &[u8]) -> Result<Value, String> {
    traitrpc_core::json::parse_arguments(body)
        .map_err(|e| format!("the body is not valid JSON: {e}"))
}

/// The arguments of a Connect GET: `message` (percent-encoded JSON; `{}` if absent), with
/// `encoding=json` if given; with `base64=1` the message is URL-safe base64 (padded or
/// not), and with `compression=gzip` it is gzipped (at most `limit` bytes once expanded).
fn get_message(query: &str, limit: usize) -> Result<Value, (Code, String)> {
    let invalid = |message: String| (Code::InvalidArgument, message);
    let mut message = None;
    let mut base64 = false;
    let mut compression = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "message" => message = Some(value.into_owned()),
            "encoding" if value != "json" => {
                return Err(invalid(format!(
                    "encoding {value} is not served: only json"
                )));
            }
            "base64" => base64 = value == "1",
            "compression" => compression = Some(value.into_owned()),
            _ => {}
        }
    }
    let mut bytes = message.unwrap_or_default().into_bytes();
    if base64 {
        bytes = crate::proto3::URL_SAFE_LENIENT
            .decode(&bytes)
            .map_err(|e| invalid(format!("the message is not URL-safe base64: {e}")))?;
    }
    let encoding = Encoding::named(compression.as_deref())
        .map_err(|message| (Code::Unimplemented, message))?;
    let bytes = encoding.decode_or_refuse(&bytes, limit, "message")?;
    parse(&bytes).map_err(invalid)
}

/// `response`, after reading what the client sends of its body (within the body limits):
/// a client still writing its body when the answer comes would see the connection reset
/// instead of the answer.
async fn drained(
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
