//! gRPC and gRPC-Web ([gRPC over HTTP/2](https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md),
//! [gRPC-Web](https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-WEB.md)): unary
//! methods and server streams, with the exported `.proto`'s messages (protobuf, or
//! proto3's JSON with `+json`), on the gateway's port next to Connect and JSON.
//!
//! - The request is `POST /{package}.{Service}/{method}` with one length-prefixed message
//!   (a flag byte, `1` if compressed with `grpc-encoding`, gzip; a 4-byte big-endian
//!   length). `grpc-timeout` is the deadline; other headers are call metadata.
//! - The answer is `200`, the messages length-prefixed, then the status: HTTP/2 trailers
//!   (`grpc-status`, `grpc-message`, and for a method's own error
//!   `grpc-status-details-bin`: a `google.rpc.Status` whose detail is a
//!   `google.protobuf.StringValue` of the error's JSON); in gRPC-Web, a last message
//!   flagged `0x80` holding the trailers as text. A call refused before it runs answers
//!   with the status in the headers ("trailers-only").
//! - `grpc.reflection.v1.ServerReflection` and `v1alpha` answer from the export
//!   ([`crate::reflection`]).

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use prost::Message;
use tokio::time::Instant;
use traitrpc_core::context::{ConnectionInfo, ResponseMetadata};
use traitrpc_core::Metadata;

use crate::call::{self, Answer, JsonCall};
use crate::codec::{Choice, Codec};
use crate::connect::{self, Code};
use crate::encoding::Encoding;
use crate::http::HttpBody;
use crate::stream;
use crate::Shared;

/// gRPC-Web's flag of the trailers message.
const WEB_TRAILERS: u8 = 0x80;

/// Which gRPC a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flavor {
    /// gRPC-Web (trailers in the body, HTTP/1.1 allowed).
    pub web: bool,
    /// The message codec (`+json`: proto3's JSON).
    pub codec: Codec,
}

impl Flavor {
    /// The flavor a request's content type names, if it is gRPC.
    pub(crate) fn of(content_type: &str) -> Option<Flavor> {
        let (web, rest) = if let Some(rest) = content_type.strip_prefix("application/grpc-web") {
            (true, rest)
        } else {
            (false, content_type.strip_prefix("application/grpc")?)
        };
        let codec = match rest {
            "" | "+proto" => Codec::Proto,
            "+json" => Codec::Json,
            _ => return None,
        };
        Some(Flavor { web, codec })
    }

    /// The content type of the answer.
    pub(crate) fn content_type(self) -> &'static str {
        match (self.web, self.codec) {
            (false, Codec::Proto) => "application/grpc",
            (false, Codec::Json) => "application/grpc+json",
            (true, Codec::Proto) => "application/grpc-web+proto",
            (true, Codec::Json) => "application/grpc-web+json",
        }
    }
}

/// gRPC's status code of a Connect code (the two share their names).
pub(crate) fn status_code(code: Code) -> u32 {
    match code {
        Code::Canceled => 1,
        Code::Unknown => 2,
        Code::InvalidArgument => 3,
        Code::DeadlineExceeded => 4,
        Code::NotFound => 5,
        Code::PermissionDenied => 7,
        Code::ResourceExhausted => 8,
        Code::FailedPrecondition => 9,
        Code::Aborted => 10,
        Code::Unimplemented => 12,
        Code::Internal => 13,
        Code::Unavailable => 14,
        Code::Unauthenticated => 16,
    }
}

/// `google.rpc.Status`, for `grpc-status-details-bin`.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

/// The status of how a call ended, as header (or trailer) fields.
pub(crate) fn status_fields(answer: &Answer) -> HeaderMap {
    let mut fields = HeaderMap::new();
    let (code, message, application_error) = match answer {
        Answer::Ok(_) | Answer::StreamEnded => {
            fields.insert("grpc-status", HeaderValue::from_static("0"));
            return fields;
        }
        Answer::Error {
            code,
            message,
            application_error,
        } => (*code, message, application_error),
    };
    let status = status_code(code);
    fields.insert("grpc-status", HeaderValue::from(status));
    if let Ok(value) = HeaderValue::from_str(&percent_encode(message)) {
        fields.insert("grpc-message", value);
    }
    if let Some(error) = application_error {
        let details = RpcStatus {
            code: status as i32,
            message: message.clone(),
            details: vec![prost_types::Any {
                type_url: format!("type.googleapis.com/{}", connect::APPLICATION_ERROR_DETAIL),
                value: connect::string_value(&error.to_string()),
            }],
        };
        let encoded =
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(details.encode_to_vec());
        if let Ok(value) = HeaderValue::from_str(&encoded) {
            fields.insert("grpc-status-details-bin", value);
        }
    }
    fields
}

/// `grpc-message`'s encoding: bytes outside printable ASCII, and `%`, as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The `grpc-timeout` header: at most 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub(crate) fn timeout(headers: &HeaderMap) -> Result<Option<Duration>, String> {
    let Some(value) = headers.get("grpc-timeout") else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| "grpc-timeout is not text")?;
    let bad = || format!("grpc-timeout must be 1 to 8 digits and a unit, not {text:?}");
    let (digits, unit) = text.split_at(text.len().saturating_sub(1));
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    Ok(Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return Err(bad()),
    }))
}

/// A trailers-only answer: the status in the headers, no body.
pub(crate) fn trailers_only(flavor: Flavor, answer: &Answer) -> Response<HttpBody> {
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, flavor.content_type())
        .body(
            http_body_util::Empty::new()
                .map_err(|e| match e {})
                .boxed_unsync(),
        )
        .expect("a valid response");
    response.headers_mut().extend(status_fields(answer));
    response
}

/// The end of a gRPC answer: trailers, or gRPC-Web's trailers message; the handler's
/// response `metadata` among them.
pub(crate) fn end_frame(flavor: Flavor, answer: &Answer, metadata: &Metadata) -> Frame<Bytes> {
    let mut fields = connect::response_headers(metadata);
    fields.extend(status_fields(answer));
    if !flavor.web {
        return Frame::trailers(fields);
    }
    let mut text = String::new();
    for (name, value) in &fields {
        text.push_str(name.as_str());
        text.push(':');
        text.push_str(value.to_str().unwrap_or(""));
        text.push_str("\r\n");
    }
    Frame::data(stream::envelope(WEB_TRAILERS, text.as_bytes()))
}

/// One gRPC call: read, run, answered.
pub(crate) async fn answer(
    shared: &Arc<Shared>,
    info: Arc<ConnectionInfo>,
    parts: Parts,
    body: Incoming,
    service: String,
    method: String,
    flavor: Flavor,
) -> Response<HttpBody> {
    if crate::reflection::is_reflection(&service, &method) {
        return crate::reflection::serve(shared, body, crate::reflection::Framing::Grpc(flavor));
    }
    let refuse = |code: Code, message: String| trailers_only(flavor, &Answer::error(code, message));
    let choice = match Choice::new(shared, &service, &method, flavor.codec, true) {
        Ok(choice) => choice,
        Err((code, message)) => {
            return crate::http::drained(shared, body, refuse(code, message)).await
        }
    };
    let arrived = Instant::now();
    let timeout = match timeout(&parts.headers) {
        Ok(Some(t)) => t.min(shared.config.max_timeout),
        Ok(None) => shared.config.default_timeout,
        Err(message) => {
            return crate::http::drained(shared, body, refuse(Code::InvalidArgument, message)).await
        }
    };
    let metadata = match connect::metadata(&parts.headers) {
        Ok(metadata) => metadata,
        Err(message) => {
            return crate::http::drained(shared, body, refuse(Code::InvalidArgument, message)).await
        }
    };
    let encoding = parts
        .headers
        .get("grpc-encoding")
        .map(|v| v.to_str().unwrap_or("(not text)"));
    let encoding = match Encoding::named(encoding) {
        Ok(encoding) => encoding,
        Err(message) => {
            return crate::http::drained(shared, body, refuse(Code::Unimplemented, message)).await
        }
    };
    let Ok(permit) = Arc::clone(&shared.in_flight).try_acquire_owned() else {
        let response = refuse(
            Code::ResourceExhausted,
            "the gateway is at its in-flight limit; the call did not run".into(),
        );
        return crate::http::drained(shared, body, response).await;
    };
    let (args, body_bytes) = match crate::http::read_body(shared, body).await {
        Ok(body) => {
            let len = body.len();
            match stream::request_body(&body, encoding, "grpc-encoding", shared.config.max_body)
                .and_then(|message| choice.arguments(&message))
            {
                Ok(args) => (args, len),
                Err((code, message)) => return refuse(code, message),
            }
        }
        Err((code, message)) => return refuse(code, message),
    };
    let deadline = arrived
        .checked_add(timeout)
        .unwrap_or_else(|| arrived + shared.config.max_timeout);
    let streaming = shared
        .router
        .get(&service)
        .and_then(|s| s.json())
        .and_then(|json| {
            json.json_methods()
                .iter()
                .find(|m| m.name == method)
                .copied()
        })
        .is_some_and(|m| m.kind == traitrpc_core::json::MethodKind::ServerStream);
    let response_metadata = ResponseMetadata::default();
    let call = JsonCall {
        service,
        method,
        args,
        args_as_sent: choice.arguments_as_sent(),
        body_bytes,
        is_get: false,
        deadline,
        metadata,
        connection: info,
        request_id: shared.next_id.fetch_add(1, Ordering::Relaxed),
        stream: None,
        render: choice.render(),
        response: response_metadata.clone(),
    };
    let response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, flavor.content_type())
        .header("grpc-accept-encoding", "gzip");
    if streaming {
        let body = stream::run_streaming(
            shared.router.clone(),
            call,
            permit,
            move |answer, metadata| end_frame(flavor, answer, metadata),
        );
        return response
            .body(body.boxed_unsync())
            .expect("a valid response");
    }
    let answer = call::run(&shared.router, call).await;
    drop(permit);
    // A unary call's response metadata: headers (initial metadata).
    let extra = connect::response_headers(&response_metadata.snapshot());
    let mut response = match answer {
        Answer::Ok(message) => {
            let frames = vec![
                Ok::<_, Infallible>(Frame::data(stream::envelope(0, &message))),
                Ok(end_frame(flavor, &Answer::StreamEnded, &Metadata::new())),
            ];
            response
                .body(StreamBody::new(futures::stream::iter(frames)).boxed_unsync())
                .expect("a valid response")
        }
        other => trailers_only(flavor, &other),
    };
    response.headers_mut().extend(extra);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_have_a_unit() {
        let mut headers = HeaderMap::new();
        assert_eq!(timeout(&headers), Ok(None));
        for (text, expected) in [
            ("1H", Duration::from_secs(3600)),
            ("2M", Duration::from_secs(120)),
            ("3S", Duration::from_secs(3)),
            ("250m", Duration::from_millis(250)),
            ("99999999u", Duration::from_micros(99_999_999)),
            ("5n", Duration::from_nanos(5)),
        ] {
            headers.insert("grpc-timeout", HeaderValue::from_static(text));
            assert_eq!(timeout(&headers), Ok(Some(expected)), "{text}");
        }
        for text in ["", "S", "123456789S", "10s", "1.5S", "-1S"] {
            headers.insert("grpc-timeout", HeaderValue::from_str(text).unwrap());
            assert!(timeout(&headers).is_err(), "{text}");
        }
    }

    #[test]
    fn content_types_name_the_flavor() {
        let grpc = |web, codec| Some(Flavor { web, codec });
        assert_eq!(Flavor::of("application/grpc"), grpc(false, Codec::Proto));
        assert_eq!(
            Flavor::of("application/grpc+proto"),
            grpc(false, Codec::Proto)
        );
        assert_eq!(
            Flavor::of("application/grpc+json"),
            grpc(false, Codec::Json)
        );
        assert_eq!(Flavor::of("application/grpc-web"), grpc(true, Codec::Proto));
        assert_eq!(
            Flavor::of("application/grpc-web+proto"),
            grpc(true, Codec::Proto)
        );
        assert_eq!(Flavor::of("application/grpc-web-text"), None);
        assert_eq!(Flavor::of("application/json"), None);
    }

    #[test]
    fn an_application_error_travels_in_the_status_details() {
        let answer = Answer::Error {
            code: Code::FailedPrecondition,
            message: "the method returned an error: 100%".into(),
            application_error: Some(serde_json::json!({"available": 10})),
        };
        let fields = status_fields(&answer);
        assert_eq!(fields["grpc-status"], "9");
        assert_eq!(
            fields["grpc-message"],
            "the method returned an error: 100%25"
        );
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(fields["grpc-status-details-bin"].as_bytes())
            .unwrap();
        let status = RpcStatus::decode(&bytes[..]).unwrap();
        assert_eq!(status.code, 9);
        assert_eq!(
            status.details[0].type_url,
            "type.googleapis.com/google.protobuf.StringValue"
        );
        assert_eq!(status.details[0].value[2..], br#"{"available":10}"#[..]);
    }
}
