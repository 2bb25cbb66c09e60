//! Server streams over HTTP, in Connect's streaming protocol (JSON codec): the request is
//! `POST` with `Content-Type: application/connect+json` and one enveloped message (the
//! arguments); the response is `200` with a body of enveloped messages, one per item,
//! then an end-of-stream message that says how the stream ended (`{}`, or `{"error":
//! {"code", "message"}}`).
//!
//! An envelope is 1 byte of flags, a 4-byte big-endian length, and that many bytes of
//! JSON. Flag `0x02` marks the end-of-stream message; flag `0x01` marks a compressed
//! request message, read with the request's `Connect-Content-Encoding` (gzip; answers
//! are not compressed). A page's `fetch` reads the answer with a `ReadableStream` reader
//! (`docs/HTTP.md` shows how).
//!
//! Chosen over newline-delimited JSON or server-sent events because it is a protocol
//! with clients in many languages already, its end message carries the error of a stream
//! that fails midway, and it needs nothing but `fetch` in a browser.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use hyper::body::{Body, Frame};
use serde_json::json;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use traitrpc_core::Metadata;

use traitrpc_core::Router;

use crate::call::{Answer, JsonCall};
use crate::connect::{error_body, Code};
use crate::encoding::Encoding;

/// The content type of Connect's streaming JSON (also of a refusal before the codec is
/// known: the end message is JSON whatever the codec).
pub(crate) const CONTENT_TYPE: &str = "application/connect+json";
/// The content type of Connect's streaming protobuf.
pub(crate) const PROTO_CONTENT_TYPE: &str = "application/connect+proto";

/// The flag of the end-of-stream message.
const END_STREAM: u8 = 0x02;
/// The flag of a compressed message.
const COMPRESSED: u8 = 0x01;
/// Items queued between the call and the socket: the call waits beyond them, so a slow
/// reader slows the stream down instead of filling memory.
pub(crate) const SINK_CAPACITY: usize = 16;

/// The arguments in a streaming request's body: exactly one enveloped JSON message (an
/// empty body, or an empty message, is `{}`); `Ok((message, compressed))`.
pub(crate) fn request_message(body: &[u8]) -> Result<(&[u8], bool), String> {
    if body.is_empty() {
        return Ok((b"", false));
    }
    let Some((header, rest)) = body.split_first_chunk::<5>() else {
        return Err("the body is not an enveloped message: it has less than 5 bytes".into());
    };
    let flags = header[0];
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if flags & !COMPRESSED != 0 {
        return Err(format!("unexpected envelope flags {flags:#04x}"));
    }
    if length != rest.len() {
        return Err(format!(
            "the envelope says {length} bytes but {} follow: send exactly one message",
            rest.len()
        ));
    }
    Ok((rest, flags & COMPRESSED != 0))
}

/// One envelope around `message`.
pub(crate) fn envelope(flags: u8, message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(flags);
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.freeze()
}

/// The end-of-stream message for how the call ended, with the handler's response
/// metadata as its `metadata` (`{"key": ["value"]}`: Connect's trailers).
pub(crate) fn end_message(answer: &Answer, metadata: &Metadata) -> Bytes {
    let mut body = match answer {
        Answer::Ok(_) | Answer::StreamEnded => json!({}),
        Answer::Error {
            code,
            message,
            application_error,
        } => json!({ "error": error_body(*code, message, application_error.clone()) }),
    };
    let trailers = crate::connect::response_headers(metadata);
    if !trailers.is_empty() {
        let mut fields = serde_json::Map::new();
        for name in trailers.keys() {
            let values: Vec<serde_json::Value> = trailers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(serde_json::Value::from)
                .collect();
            fields.insert(name.to_string(), serde_json::Value::Array(values));
        }
        body["metadata"] = serde_json::Value::Object(fields);
    }
    envelope(END_STREAM, body.to_string().as_bytes())
}

/// The body of a streaming answer that runs `call` (a server stream, its `stream` set
/// here): the items as they come, then the last frame `end` makes of how the call ended
/// and the handler's response metadata (the headers have left before the handler ran).
/// The body runs the call, so the call ends when the caller leaves, and shutdown waits
/// for it with the connection; it holds the in-flight `permit` until the call ends.
pub(crate) fn run_streaming<E>(
    router: Router,
    mut call: JsonCall,
    permit: OwnedSemaphorePermit,
    end: E,
) -> Envelopes
where
    E: FnOnce(&Answer, &Metadata) -> Frame<Bytes> + Send + 'static,
{
    let (items, items_out) = mpsc::channel(SINK_CAPACITY);
    call.stream = Some(items);
    let response = call.response.clone();
    let run = Box::pin(async move {
        let answer = crate::call::run(&router, call).await;
        end(&answer, &response.snapshot())
    });
    Envelopes::new(items_out, run, permit)
}

/// The call behind a stream: it sends its items to the body's channel and resolves to
/// the body's last frame (Connect's end-of-stream message, gRPC's trailers).
pub(crate) type StreamCall = Pin<Box<dyn Future<Output = Frame<Bytes>> + Send>>;

/// A response body of envelopes (Connect's, and gRPC's length-prefixed messages, which
/// are the same): items from the call's sink as they come, then the last frame the call
/// resolves to.
///
/// The body runs the call itself (it polls it whenever it is polled), so the call lives
/// exactly as long as the response: when the caller goes away, the connection drops the
/// body and with it the call (its handler and its in-flight permit), and a gateway's
/// shutdown, which waits for its connections, waits for its streams too.
pub(crate) struct Envelopes {
    items: mpsc::Receiver<Bytes>,
    /// The call, while it runs.
    call: Option<StreamCall>,
    /// The in-flight permit, held until the call ends.
    permit: Option<OwnedSemaphorePermit>,
    /// The last frame, once the call has ended.
    end: Option<Frame<Bytes>>,
    done: bool,
}

impl Envelopes {
    /// The body of `call`, whose items arrive on `items`; `permit` is released when the
    /// call ends (or the body is dropped).
    pub(crate) fn new(
        items: mpsc::Receiver<Bytes>,
        call: StreamCall,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        Envelopes {
            items,
            call: Some(call),
            permit: Some(permit),
            end: None,
            done: false,
        }
    }
}

impl Body for Envelopes {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(call) = &mut this.call {
            if let Poll::Ready(end) = call.as_mut().poll(cx) {
                this.call = None;
                this.permit = None;
                this.end = Some(end);
            }
        }
        // Items first: the call has queued its last item before it ends, and it drops
        // the sender when it does.
        match this.items.poll_recv(cx) {
            Poll::Ready(Some(item)) => {
                return Poll::Ready(Some(Ok(Frame::data(envelope(0, &item)))))
            }
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {}
        }
        match this.end.take() {
            Some(end) => {
                this.done = true;
                Poll::Ready(Some(Ok(end)))
            }
            // The handler dropped its sink while the call goes on: the call's own
            // waker brings the body back here when it ends.
            None => Poll::Pending,
        }
    }
}

/// The one message of a streaming request's body (empty for none), expanded with the
/// stream's `encoding` if its envelope is compressed (at most `limit` bytes); the
/// encoding is named by the request's header `encoding_header`
/// (`Connect-Content-Encoding`, or gRPC's `grpc-encoding`: gRPC's length-prefixed
/// messages are the same envelopes).
pub(crate) fn request_body(
    body: &[u8],
    encoding: Encoding,
    encoding_header: &str,
    limit: usize,
) -> Result<Vec<u8>, (Code, String)> {
    let invalid = |message: String| (Code::InvalidArgument, message);
    let (message, compressed) = request_message(body).map_err(invalid)?;
    if !compressed {
        return Ok(message.to_vec());
    }
    if encoding == Encoding::Identity {
        return Err(invalid(format!(
            "a compressed envelope needs {encoding_header} (gzip)"
        )));
    }
    Ok(encoding
        .decode_or_refuse(message, limit, "message")?
        .into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_exactly_one_envelope_compressed_or_not() {
        let mut body = vec![0, 0, 0, 0, 7];
        body.extend_from_slice(br#"{"a":1}"#);
        assert_eq!(request_message(&body), Ok((&br#"{"a":1}"#[..], false)));
        assert_eq!(request_message(b""), Ok((&b""[..], false)));
        assert!(request_message(&body[..4]).is_err(), "short header");
        assert!(request_message(&body[..8]).is_err(), "short message");
        let mut two = body.clone();
        two.extend_from_slice(&body);
        assert!(request_message(&two).is_err(), "two messages");
        body[0] = COMPRESSED;
        assert_eq!(request_message(&body), Ok((&br#"{"a":1}"#[..], true)));
        assert!(request_body(&body, Encoding::Identity, "Connect-Content-Encoding", 100).is_err());
        body[0] = 0x04;
        assert!(request_message(&body).unwrap_err().contains("flags"));
    }

    #[test]
    fn the_end_message_carries_the_error() {
        let end = end_message(
            &Answer::error(crate::connect::Code::Aborted, "boom"),
            &Metadata::new(),
        );
        assert_eq!(end[0], END_STREAM);
        let json: serde_json::Value = serde_json::from_slice(&end[5..]).unwrap();
        assert_eq!(json["error"]["code"], "aborted");
        assert_eq!(json["error"]["message"], "boom");
        assert_eq!(
            &end_message(&Answer::StreamEnded, &Metadata::new())[5..],
            b"{}"
        );
        let mut metadata = Metadata::new();
        metadata.insert("x-count", "3").unwrap();
        metadata.insert("grpc-status", "0").unwrap();
        let end = end_message(&Answer::StreamEnded, &metadata);
        assert_eq!(&end[5..], br#"{"metadata":{"x-count":["3"]}}"#);
    }
}
