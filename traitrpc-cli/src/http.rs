//! The HTTP gateway's client side (hyper 1, HTTP/1.1, one connection per request):
//! Connect's unary JSON (`POST /{Service}/{method}`, `application/json`) and its
//! streaming JSON for server streams (`application/connect+json`: one enveloped request
//! message; items, then an end-of-stream message, in the response), plus the listing at
//! `GET /.well-known/rrpc/services`.

use std::time::Duration;

use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use crate::cli::Options;
use crate::client::{Failure, Items};
use crate::model::{parse_services, ServiceInfo};
use crate::target::HttpTarget;

/// The gateway's listing.
const SERVICES_PATH: &str = "/.well-known/rrpc/services";
/// Connect's unary JSON.
const JSON: &str = "application/json";
/// Connect's streaming JSON.
const CONNECT_JSON: &str = "application/connect+json";
/// The flag of a compressed envelope (never sent by this client, refused if received).
const COMPRESSED: u8 = 0x01;
/// The flag of the end-of-stream envelope.
const END_STREAM: u8 = 0x02;
/// The largest envelope accepted (the gateway's items are far smaller).
const MAX_ENVELOPE: usize = 64 * 1024 * 1024;

/// A client of one gateway.
pub struct HttpClient {
    target: HttpTarget,
    timeout: Duration,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl HttpClient {
    /// A client of `target` sending `options`' metadata as headers.
    pub fn new(target: HttpTarget, options: &Options) -> anyhow::Result<HttpClient> {
        let mut headers = Vec::new();
        for (key, value) in &options.metadata {
            let name = HeaderName::from_bytes(key.as_bytes()).map_err(|_| {
                crate::Usage(format!("--metadata {key}: not a valid HTTP header name"))
            })?;
            let value = HeaderValue::from_str(value).map_err(|_| {
                crate::Usage(format!("--metadata {key}: not a valid HTTP header value"))
            })?;
            headers.push((name, value));
        }
        Ok(HttpClient {
            target,
            timeout: options.timeout,
            headers,
        })
    }

    /// Sends one request on a connection of its own; the response's body is read by the
    /// caller (the connection lives until it is).
    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Response<Incoming>, Failure> {
        let addr = &self.target.connect;
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| Failure::Transport(format!("failed to connect to {addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.broken(e))?;
        tokio::spawn(async move {
            // Errors reach the request or the body being read.
            let _ = connection.await;
        });
        let mut request = Request::builder()
            .method(method)
            .uri(self.target.path(path))
            .header(HOST, &self.target.authority)
            // No Connect-Protocol-Version: with it the gateway would read and write
            // proto3's JSON of the exported messages; the CLI speaks serde's JSON.
            .header(
                "connect-timeout-ms",
                self.timeout.as_millis().clamp(1, 9_999_999_999).to_string(),
            );
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| Failure::Transport(format!("cannot make a request of {path:?}: {e}")))?;
        sender
            .send_request(request)
            .await
            .map_err(|e| self.broken(e))
    }

    /// A failed exchange: perhaps the server does not speak HTTP.
    fn broken(&self, error: hyper::Error) -> Failure {
        Failure::Transport(format!(
            "HTTP exchange with {} failed: {error}\nhint: if it is a native traitrpc server, \
             write its address without http://",
            self.target.connect
        ))
    }

    /// Runs `exchange` within the deadline.
    async fn within<T>(
        &self,
        deadline: Instant,
        exchange: impl std::future::Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        timeout_at(deadline, exchange)
            .await
            .unwrap_or(Err(Failure::Deadline))
    }

    /// Calls a unary method.
    pub async fn call(&self, service: &str, method: &str, args: &Value) -> Result<Value, Failure> {
        let deadline = Instant::now() + self.timeout;
        let path = format!("/{service}/{method}");
        self.within(deadline, async {
            let body = Bytes::from(args.to_string());
            let response = self.send(Method::POST, &path, Some(JSON), body).await?;
            let status = response.status();
            let body = read_body(response).await?;
            if status != StatusCode::OK {
                return Err(connect_error(status, &body));
            }
            parse_json(&body).map_err(|e| Failure::Transport(format!("the result {e}")))
        })
        .await
    }

    /// The gateway's listing.
    pub async fn list(&self) -> Result<Vec<ServiceInfo>, Failure> {
        let deadline = Instant::now() + self.timeout;
        self.within(deadline, async {
            let response = self
                .send(Method::GET, SERVICES_PATH, None, Bytes::new())
                .await?;
            let status = response.status();
            let body = read_body(response).await?;
            if status != StatusCode::OK {
                return Err(connect_error(status, &body));
            }
            let listing =
                parse_json(&body).map_err(|e| Failure::Transport(format!("the listing {e}")))?;
            parse_services(&listing)
                .map_err(|e| Failure::Transport(format!("{SERVICES_PATH}: {e}")))
        })
        .await
    }

    /// Calls a server-streaming method: its items as their envelopes arrive.
    pub async fn stream(
        &self,
        service: &str,
        method: &str,
        args: &Value,
    ) -> Result<Items, Failure> {
        let deadline = Instant::now() + self.timeout;
        let path = format!("/{service}/{method}");
        let response = self
            .within(deadline, async {
                let body = envelope(0, args.to_string().as_bytes());
                let response = self
                    .send(Method::POST, &path, Some(CONNECT_JSON), body)
                    .await?;
                let status = response.status();
                let streaming = response
                    .headers()
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with(CONNECT_JSON));
                if status != StatusCode::OK || !streaming {
                    // Refused before the stream started: a plain Connect error.
                    let body = read_body(response).await?;
                    return Err(connect_error(status, &body));
                }
                Ok(response)
            })
            .await?;
        let reader = Envelopes {
            body: response.into_body(),
            buffer: Vec::new(),
            deadline,
            done: false,
        };
        Ok(futures::stream::unfold(reader, |mut reader| async move {
            let item = reader.next_item().await?;
            Some((item, reader))
        })
        .boxed())
    }
}

/// A response body of Connect envelopes, read item by item.
struct Envelopes {
    body: Incoming,
    buffer: Vec<u8>,
    deadline: Instant,
    done: bool,
}

impl Envelopes {
    /// The next item, the stream's error, or `None` at its normal end.
    async fn next_item(&mut self) -> Option<Result<Value, Failure>> {
        if self.done {
            return None;
        }
        let outcome = self.next_envelope().await;
        if !matches!(outcome, Some(Ok(_))) {
            self.done = true;
        }
        outcome
    }

    async fn next_envelope(&mut self) -> Option<Result<Value, Failure>> {
        loop {
            if let Some((flags, message)) = self.take_envelope() {
                let message = match message {
                    Ok(message) => message,
                    Err(failure) => return Some(Err(failure)),
                };
                return match flags {
                    0 => Some(
                        parse_json(&message)
                            .map_err(|e| Failure::Transport(format!("a stream item {e}"))),
                    ),
                    END_STREAM => end_of_stream(&message),
                    flags => Some(Err(Failure::Transport(format!(
                        "the gateway sent an envelope with flags {flags:#04x}"
                    )))),
                };
            }
            match timeout_at(self.deadline, self.body.frame()).await {
                Err(_) => return Some(Err(Failure::Deadline)),
                Ok(None) => {
                    return Some(Err(Failure::Transport(
                        "the stream ended without its end-of-stream message".into(),
                    )))
                }
                Ok(Some(Err(e))) => {
                    return Some(Err(Failure::Transport(format!(
                        "the stream broke off: {e}"
                    ))))
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// The first whole envelope in the buffer, if one has arrived: its flags and message.
    fn take_envelope(&mut self) -> Option<(u8, Result<Vec<u8>, Failure>)> {
        let header: [u8; 5] = self.buffer.get(..5)?.try_into().ok()?;
        let flags = header[0];
        let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if flags & COMPRESSED != 0 {
            return Some((
                flags,
                Err(Failure::Transport(
                    "the gateway sent a compressed envelope, which this client did not ask for"
                        .into(),
                )),
            ));
        }
        if length > MAX_ENVELOPE {
            return Some((
                flags,
                Err(Failure::Transport(format!(
                    "the gateway announced an envelope of {length} bytes (at most {MAX_ENVELOPE})"
                ))),
            ));
        }
        if self.buffer.len() < 5 + length {
            return None;
        }
        let message = self.buffer[5..5 + length].to_vec();
        self.buffer.drain(..5 + length);
        Some((flags, Ok(message)))
    }
}

/// How a stream ended, from its end-of-stream message: `None` if it ended normally.
fn end_of_stream(message: &[u8]) -> Option<Result<Value, Failure>> {
    let end = match parse_json(message) {
        Ok(end) => end,
        Err(e) => {
            return Some(Err(Failure::Transport(format!(
                "the end-of-stream message {e}"
            ))))
        }
    };
    match end.get("error") {
        None | Some(Value::Null) => None,
        Some(error) => Some(Err(error_of(error))),
    }
}

/// One envelope around `message`.
fn envelope(flags: u8, message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(flags);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    Bytes::from(out)
}

/// A whole response body.
async fn read_body(response: Response<Incoming>) -> Result<Bytes, Failure> {
    response
        .into_body()
        .collect()
        .await
        .map(|body| body.to_bytes())
        .map_err(|e| Failure::Transport(format!("reading the answer failed: {e}")))
}

/// JSON text as a value (an empty body is `null`).
fn parse_json(body: &[u8]) -> Result<Value, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).map_err(|e| format!("is not JSON: {e}"))
}

/// The failure an error response says: Connect's error JSON, or its status and text.
fn connect_error(status: StatusCode, body: &[u8]) -> Failure {
    match serde_json::from_slice::<Value>(body) {
        Ok(error) if error.get("code").is_some_and(Value::is_string) => error_of(&error),
        _ => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let shown: String = text.chars().take(300).collect();
            Failure::Transport(format!(
                "HTTP {status}{}{shown}",
                if shown.is_empty() { "" } else { ": " }
            ))
        }
    }
}

/// A Connect error object: the method's own error for `failed_precondition` with an
/// `error` field, else the code and message.
fn error_of(error: &Value) -> Failure {
    let code = error
        .get("code")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    if code == "failed_precondition" {
        if let Some(own) = error.get("error") {
            return Failure::Application(own.clone());
        }
    }
    Failure::Http {
        message: error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_are_connects() {
        let body = br#"{"code":"failed_precondition","message":"m","error":"division by zero"}"#;
        assert!(matches!(
            connect_error(StatusCode::BAD_REQUEST, body),
            Failure::Application(Value::String(e)) if e == "division by zero"
        ));
        let body = br#"{"code":"unimplemented","message":"`Calc` has no method `nope`"}"#;
        assert!(connect_error(StatusCode::NOT_IMPLEMENTED, body).is_not_found());
        let body = br#"{"code":"unimplemented","message":"`Calc.add`: it is unary"}"#;
        assert!(!connect_error(StatusCode::NOT_IMPLEMENTED, body).is_not_found());
        let body = br#"{"code":"not_found","message":"`Calc` has no method `nope`"}"#;
        let failure = connect_error(StatusCode::NOT_FOUND, body);
        assert!(failure.is_not_found());
        assert_eq!(
            failure.to_string(),
            "not found: `Calc` has no method `nope`"
        );
        let failure = connect_error(StatusCode::BAD_GATEWAY, b"<html>nope</html>");
        assert_eq!(
            failure.to_string(),
            "HTTP 502 Bad Gateway: <html>nope</html>"
        );
    }

    #[test]
    fn envelopes_frame_messages() {
        assert_eq!(&envelope(0, b"{}")[..], b"\0\0\0\0\x02{}");
        assert!(end_of_stream(b"{}").is_none());
        let end = json!({"error": {"code": "aborted", "message": "boom"}}).to_string();
        let failure = end_of_stream(end.as_bytes()).unwrap().unwrap_err();
        assert_eq!(failure.to_string(), "aborted: boom");
    }
}
