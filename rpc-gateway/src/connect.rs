//! The Connect protocol's shapes: error codes and their HTTP statuses, the error body,
//! the timeout header, which request headers become call metadata, and a GET's query.

use base64::Engine;
use hyper::header::HeaderMap;

use crate::codec::Codec;
use crate::encoding::Encoding;
use hyper::StatusCode;
use serde_json::{json, Value};
use traitrpc_core::protocol::status;
use traitrpc_core::Metadata;

/// A Connect error code (the protocol's names) with the HTTP status it travels with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The caller gave up (not sent by this gateway: a dropped request has no answer).
    Canceled,
    /// An error without a better code.
    Unknown,
    /// Arguments the method cannot take (malformed JSON, a wrong type, a missing or
    /// unknown parameter).
    InvalidArgument,
    /// The deadline (`Connect-Timeout-Ms`, or the gateway's own limit) passed.
    DeadlineExceeded,
    /// No such service or method.
    NotFound,
    /// The method returned `Err(e)`: `e` is in the body's `error` field.
    FailedPrecondition,
    /// The call was stopped after it started (the server shut down under it).
    Aborted,
    /// A limit was reached (too many calls, a body too large); the call did not run.
    ResourceExhausted,
    /// The method exists but cannot be called this way (a stream, a `GET` of a method
    /// that is not idempotent).
    Unimplemented,
    /// The handler failed (it panicked, its result could not be encoded).
    Internal,
    /// The server is shutting down; the call did not run.
    Unavailable,
    /// Missing or invalid credentials.
    Unauthenticated,
    /// The caller may not make this call.
    PermissionDenied,
}

impl Code {
    /// The code's name in Connect's error body.
    pub fn name(self) -> &'static str {
        match self {
            Code::Canceled => "canceled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::FailedPrecondition => "failed_precondition",
            Code::Aborted => "aborted",
            Code::ResourceExhausted => "resource_exhausted",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::Unauthenticated => "unauthenticated",
            Code::PermissionDenied => "permission_denied",
        }
    }

    /// The HTTP status Connect specifies for the code.
    pub fn http_status(self) -> StatusCode {
        match self {
            Code::Canceled => StatusCode::from_u16(499).expect("a valid status"),
            Code::Unknown | Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::InvalidArgument | Code::FailedPrecondition => StatusCode::BAD_REQUEST,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::Aborted => StatusCode::CONFLICT,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
        }
    }

    /// The code for one of the native protocol's statuses (`traitrpc_core::protocol::status`).
    pub fn of_status(code: u8) -> Code {
        match code {
            status::APPLICATION_ERROR => Code::FailedPrecondition,
            status::UNKNOWN_SERVICE | status::UNKNOWN_METHOD => Code::Unimplemented,
            status::INVALID_ARGUMENTS | status::SCHEMA_MISMATCH => Code::InvalidArgument,
            status::DEADLINE_EXCEEDED => Code::DeadlineExceeded,
            status::HANDLER_PANICKED | status::ENCODE_FAILED | status::INTERNAL => Code::Internal,
            status::SHUTTING_DOWN => Code::Unavailable,
            status::FRAME_TOO_LARGE | status::OVERLOADED => Code::ResourceExhausted,
            status::UNAUTHENTICATED => Code::Unauthenticated,
            status::PERMISSION_DENIED => Code::PermissionDenied,
            status::ABORTED | status::INTERRUPTED => Code::Aborted,
            _ => Code::Unknown,
        }
    }
}

/// Connect's error body: `{"code": ..., "message": ...}`. An application error (the
/// method's own `Err(e)`) travels twice: as Connect's error detail (what Connect clients
/// read, [`APPLICATION_ERROR_DETAIL`]) and as `error` (`e` as JSON, for curl).
pub fn error_body(code: Code, message: &str, application_error: Option<Value>) -> Value {
    let mut body = json!({ "code": code.name(), "message": message });
    if let Some(error) = application_error {
        body["details"] = json!([application_error_detail(&error)]);
        body["error"] = error;
    }
    body
}

/// The type of the error detail that carries a method's own error: protobuf's well-known
/// `StringValue`, holding the error's JSON text; the detail's `debug` is the error as
/// JSON.
pub const APPLICATION_ERROR_DETAIL: &str = "google.protobuf.StringValue";

/// The error detail for application error `error`: `{"type", "value", "debug"}`, the value
/// a `google.protobuf.StringValue` (field 1, the JSON text) in protobuf's binary form,
/// base64 without padding as Connect asks.
fn application_error_detail(error: &Value) -> Value {
    use base64::Engine;
    let message = string_value(&error.to_string());
    json!({
        "type": APPLICATION_ERROR_DETAIL,
        "value": base64::engine::general_purpose::STANDARD_NO_PAD.encode(message),
        "debug": error,
    })
}

/// A `google.protobuf.StringValue` holding `text`, in protobuf's binary form (prost
/// encodes `String` as that well-known wrapper).
pub(crate) fn string_value(text: &str) -> Vec<u8> {
    prost::Message::encode_to_vec(&text.to_string())
}

/// The `Connect-Timeout-Ms` header: at most 10 digits (Connect's rule), in milliseconds.
/// `Err` for a malformed value.
pub fn timeout_ms(headers: &HeaderMap) -> Result<Option<u64>, String> {
    let Some(value) = headers.get("connect-timeout-ms") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| "Connect-Timeout-Ms is not text".to_string())?;
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "Connect-Timeout-Ms must be 1 to 10 digits, not {text:?}"
        ));
    }
    Ok(Some(text.parse().expect("at most 10 digits fit a u64")))
}

/// A handler's response metadata as HTTP header fields: the entries whose names and
/// values HTTP can carry and that are not HTTP's, Connect's or gRPC's own (those are
/// left out, so a handler cannot forge a status).
pub(crate) fn response_headers(metadata: &Metadata) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in metadata.iter() {
        if is_transport_header(name) {
            continue;
        }
        let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(name.as_bytes()),
            hyper::header::HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    headers
}

/// Headers that are HTTP's or Connect's own, not the application's.
fn is_transport_header(name: &str) -> bool {
    name.starts_with("connect-")
        || name.starts_with("grpc-")
        || name.starts_with("content-")
        || name.starts_with("accept")
        || name.starts_with("access-control-")
        || name.starts_with("sec-")
        || matches!(
            name,
            "host"
                | "user-agent"
                | "connection"
                | "keep-alive"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "upgrade"
                | "origin"
                | "referer"
                | "cookie"
                | "proxy-authorization"
                | "expect"
                | "priority"
                | "x-grpc-web"
                | "x-user-agent"
        )
}

/// The application's request headers as call metadata (names are lowercase in HTTP),
/// so middleware and handlers read them as they read a native call's (`authorization`,
/// `traceparent`, ...). `Err` names a header the metadata cannot carry.
pub fn metadata(headers: &HeaderMap) -> Result<Metadata, String> {
    let mut metadata = Metadata::new();
    for (name, value) in headers {
        let name = name.as_str();
        if is_transport_header(name) {
            continue;
        }
        let value = value
            .to_str()
            .map_err(|_| format!("header {name} is not text"))?;
        metadata
            .insert(name, value)
            .map_err(|e| format!("header {name}: {e}"))?;
    }
    Ok(metadata)
}

/// URL-safe base64, padded or not (Connect's GET `base64=1`).
const URL_SAFE_LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// A Connect GET's query: `message` (the request message, percent-encoded; empty if
/// absent), `encoding` (`json` or `proto`), `base64=1` (the message is URL-safe base64,
/// padded or not), `compression` (`gzip`), `connect=v1` (a Connect client).
pub(crate) struct GetQuery {
    pub(crate) message: Vec<u8>,
    pub(crate) codec: Codec,
    pub(crate) base64: bool,
    pub(crate) compression: Option<String>,
    pub(crate) connect: bool,
}

pub(crate) fn get_query(query: &str) -> Result<GetQuery, (Code, String)> {
    let mut get = GetQuery {
        message: Vec::new(),
        codec: Codec::Json,
        base64: false,
        compression: None,
        connect: false,
    };
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "message" => get.message = value.into_owned().into_bytes(),
            "encoding" => {
                get.codec = match &*value {
                    "json" => Codec::Json,
                    "proto" => Codec::Proto,
                    other => {
                        return Err((
                            Code::Unimplemented,
                            format!("encoding {other} is not served: json or proto"),
                        ))
                    }
                }
            }
            "base64" => get.base64 = value == "1",
            "compression" => get.compression = Some(value.into_owned()),
            "connect" => get.connect = value.starts_with('v'),
            _ => {}
        }
    }
    Ok(get)
}

impl GetQuery {
    /// The request message, decoded and expanded (at most `limit` bytes).
    pub(crate) fn message(self, limit: usize) -> Result<Vec<u8>, (Code, String)> {
        let mut bytes = self.message;
        if self.base64 {
            bytes = URL_SAFE_LENIENT.decode(&bytes).map_err(|e| {
                (
                    Code::InvalidArgument,
                    format!("the message is not URL-safe base64: {e}"),
                )
            })?;
        }
        let encoding = Encoding::named(self.compression.as_deref())
            .map_err(|message| (Code::Unimplemented, message))?;
        Ok(encoding
            .decode_or_refuse(&bytes, limit, "message")?
            .into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_a_code_and_codes_have_connects_http_statuses() {
        assert_eq!(
            Code::of_status(status::INVALID_ARGUMENTS),
            Code::InvalidArgument
        );
        assert_eq!(Code::of_status(status::UNKNOWN_METHOD), Code::Unimplemented);
        assert_eq!(Code::of_status(200), Code::Unknown);
        assert_eq!(
            Code::Unauthenticated.http_status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            Code::DeadlineExceeded.http_status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(Code::Canceled.http_status().as_u16(), 499);
    }

    #[test]
    fn timeouts_are_one_to_ten_digits() {
        let mut headers = HeaderMap::new();
        assert_eq!(timeout_ms(&headers), Ok(None));
        headers.insert("connect-timeout-ms", "250".parse().unwrap());
        assert_eq!(timeout_ms(&headers), Ok(Some(250)));
        for bad in ["", "-1", "1.5", "12345678901", "ten"] {
            headers.insert("connect-timeout-ms", bad.parse().unwrap());
            assert!(timeout_ms(&headers).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn application_headers_become_metadata_and_transport_headers_do_not() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer t".parse().unwrap());
        headers.insert("content-type", "application/json".parse().unwrap());
        headers.insert("connect-protocol-version", "1".parse().unwrap());
        headers.insert("host", "x".parse().unwrap());
        let metadata = metadata(&headers).unwrap();
        assert_eq!(metadata.get_str("authorization"), Some("Bearer t"));
        assert_eq!(metadata.len(), 1);
    }
}
