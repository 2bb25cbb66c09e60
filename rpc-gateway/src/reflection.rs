//! gRPC server reflection (`grpc.reflection.v1.ServerReflection` and its older name
//! `grpc.reflection.v1alpha.ServerReflection`, the same messages): what `grpcurl`,
//! `grpcui`, Postman and `buf curl --reflect` ask a server for, answered from the
//! exported descriptors, so they call a service with no `.proto` file at all.
//!
//! The call is a bidirectional stream: each request message is answered as it arrives
//! (the service list, or the file that defines a symbol or has a name, with the files it
//! imports); the answer ends when the client ends its requests.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::header;
use hyper::{Response, StatusCode};
use prost::Message;
use traitrpc_proto::prost_reflect::{DescriptorPool, FileDescriptor};

use crate::call::Answer;
use crate::codec::Codec;
use crate::connect::Code;
use crate::grpc::{self, Flavor};
use crate::http::HttpBody;
use crate::stream::{self, Envelopes};
use crate::Shared;

/// The reflection service's names (v1, and v1alpha, which older tools ask for).
pub(crate) const SERVICES: [&str; 2] = [
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Whether `service.method` is the reflection call.
pub(crate) fn is_reflection(service: &str, method: &str) -> bool {
    SERVICES.contains(&service) && method == "ServerReflectionInfo"
}

#[derive(Clone, PartialEq, prost::Message)]
struct ReflectionRequest {
    #[prost(string, tag = "1")]
    host: String,
    #[prost(oneof = "Request", tags = "3, 4, 5, 6, 7")]
    request: Option<Request>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Request {
    #[prost(string, tag = "3")]
    FileByFilename(String),
    #[prost(string, tag = "4")]
    FileContainingSymbol(String),
    #[prost(message, tag = "5")]
    FileContainingExtension(ExtensionRequest),
    #[prost(string, tag = "6")]
    AllExtensionNumbersOfType(String),
    #[prost(string, tag = "7")]
    ListServices(String),
}

#[derive(Clone, PartialEq, prost::Message)]
struct ExtensionRequest {
    #[prost(string, tag = "1")]
    containing_type: String,
    #[prost(int32, tag = "2")]
    extension_number: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ReflectionResponse {
    #[prost(string, tag = "1")]
    valid_host: String,
    #[prost(message, optional, tag = "2")]
    original_request: Option<ReflectionRequest>,
    #[prost(oneof = "Reply", tags = "4, 5, 6, 7")]
    reply: Option<Reply>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Reply {
    #[prost(message, tag = "4")]
    FileDescriptors(FileDescriptorResponse),
    #[prost(message, tag = "5")]
    ExtensionNumbers(ExtensionNumberResponse),
    #[prost(message, tag = "6")]
    Services(ListServiceResponse),
    #[prost(message, tag = "7")]
    Error(ErrorResponse),
}

#[derive(Clone, PartialEq, prost::Message)]
struct FileDescriptorResponse {
    #[prost(bytes = "vec", repeated, tag = "1")]
    file_descriptor_proto: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ExtensionNumberResponse {
    #[prost(string, tag = "1")]
    base_type_name: String,
    #[prost(int32, repeated, tag = "2")]
    extension_number: Vec<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ListServiceResponse {
    #[prost(message, repeated, tag = "1")]
    service: Vec<ServiceResponse>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ServiceResponse {
    #[prost(string, tag = "1")]
    name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ErrorResponse {
    #[prost(int32, tag = "1")]
    error_code: i32,
    #[prost(string, tag = "2")]
    error_message: String,
}

/// The answer to one reflection request.
fn reply(
    pool: &DescriptorPool,
    services: &[String],
    request: ReflectionRequest,
) -> ReflectionResponse {
    let not_found = |what: String| {
        Reply::Error(ErrorResponse {
            error_code: grpc::status_code(Code::NotFound) as i32,
            error_message: what,
        })
    };
    let reply = match &request.request {
        Some(Request::ListServices(_)) => Reply::Services(ListServiceResponse {
            service: services
                .iter()
                .map(|name| ServiceResponse { name: name.clone() })
                .collect(),
        }),
        Some(Request::FileByFilename(name)) => match pool.get_file_by_name(name) {
            Some(file) => Reply::FileDescriptors(with_imports(&file)),
            None => not_found(format!("no file named {name}")),
        },
        Some(Request::FileContainingSymbol(symbol)) => match file_of(pool, symbol) {
            Some(file) => Reply::FileDescriptors(with_imports(&file)),
            None => not_found(format!("no symbol named {symbol}")),
        },
        Some(Request::FileContainingExtension(extension)) => not_found(format!(
            "{} has no extension {} (the export declares none)",
            extension.containing_type, extension.extension_number
        )),
        Some(Request::AllExtensionNumbersOfType(name)) => {
            if pool.get_message_by_name(name).is_some() {
                Reply::ExtensionNumbers(ExtensionNumberResponse {
                    base_type_name: name.clone(),
                    extension_number: Vec::new(),
                })
            } else {
                not_found(format!("no message named {name}"))
            }
        }
        None => Reply::Error(ErrorResponse {
            error_code: grpc::status_code(Code::InvalidArgument) as i32,
            error_message: "the request asks for nothing".into(),
        }),
    };
    ReflectionResponse {
        valid_host: request.host.clone(),
        original_request: Some(request),
        reply: Some(reply),
    }
}

/// The file that defines `symbol` (a service, method, message, enum, or field).
fn file_of(pool: &DescriptorPool, symbol: &str) -> Option<FileDescriptor> {
    let symbol = symbol.trim_start_matches('.');
    if let Some(service) = pool.get_service_by_name(symbol) {
        return Some(service.parent_file());
    }
    if let Some(message) = pool.get_message_by_name(symbol) {
        return Some(message.parent_file());
    }
    if let Some(e) = pool.get_enum_by_name(symbol) {
        return Some(e.parent_file());
    }
    let (parent, _) = symbol.rsplit_once('.')?;
    if let Some(service) = pool.get_service_by_name(parent) {
        return Some(service.parent_file());
    }
    pool.get_message_by_name(parent).map(|m| m.parent_file())
}

/// `file` and every file it imports, directly or not, encoded.
fn with_imports(file: &FileDescriptor) -> FileDescriptorResponse {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut todo = vec![file.clone()];
    while let Some(file) = todo.pop() {
        if !seen.insert(file.name().to_string()) {
            continue;
        }
        out.push(file.file_descriptor_proto().encode_to_vec());
        todo.extend(file.dependencies());
    }
    FileDescriptorResponse {
        file_descriptor_proto: out,
    }
}

/// How a reflection call is framed: gRPC (or gRPC-Web), or Connect's streaming protocol
/// (`buf curl`'s default, which reflects over the protocol it calls with).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Framing {
    /// gRPC or gRPC-Web: trailers (or the trailers message) end the answer.
    Grpc(Flavor),
    /// Connect's streaming protocol: the end-of-stream message ends it.
    Connect,
}

impl Framing {
    fn content_type(self) -> &'static str {
        match self {
            Framing::Grpc(flavor) => flavor.content_type(),
            Framing::Connect => stream::PROTO_CONTENT_TYPE,
        }
    }

    fn end(self, answer: &Answer) -> Frame<Bytes> {
        match self {
            Framing::Grpc(flavor) => {
                grpc::end_frame(flavor, answer, &traitrpc_core::Metadata::new())
            }
            Framing::Connect => {
                Frame::data(stream::end_message(answer, &traitrpc_core::Metadata::new()))
            }
        }
    }

    /// An answer with no messages: only how the call ended.
    fn refusal(self, code: Code, message: &str) -> Response<HttpBody> {
        let answer = Answer::error(code, message);
        match self {
            Framing::Grpc(flavor) => grpc::trailers_only(flavor, &answer),
            Framing::Connect => Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, self.content_type())
                .body(
                    http_body_util::Full::new(stream::end_message(
                        &answer,
                        &traitrpc_core::Metadata::new(),
                    ))
                    .map_err(|e| match e {})
                    .boxed_unsync(),
                )
                .expect("a valid response"),
        }
    }
}

/// Serves one reflection call: answers stream out as the requests come in.
pub(crate) fn serve(shared: &Arc<Shared>, body: Incoming, framing: Framing) -> Response<HttpBody> {
    let Some(proto) = shared.proto.clone() else {
        return framing.refusal(
            Code::Unimplemented,
            "the gateway has no protobuf form of its services",
        );
    };
    if let Framing::Grpc(flavor) = framing {
        if flavor.codec != Codec::Proto {
            return framing.refusal(Code::Unimplemented, "reflection speaks protobuf only");
        }
    }
    let Ok(permit) = Arc::clone(&shared.in_flight).try_acquire_owned() else {
        return framing.refusal(
            Code::ResourceExhausted,
            "the gateway is at its in-flight limit; the call did not run",
        );
    };
    // The exported services (the reflection service itself has no descriptor here, so it
    // is not listed: a listed name must resolve).
    let services: Vec<String> = proto
        .export()
        .files
        .iter()
        .flat_map(|file| {
            let package = file.package().to_string();
            file.service.iter().map(move |s| {
                if package.is_empty() {
                    s.name().to_string()
                } else {
                    format!("{package}.{}", s.name())
                }
            })
        })
        .collect();
    let limit = shared.config.max_body;
    let idle = shared.config.body_timeout;
    let (items, items_out) = tokio::sync::mpsc::channel(stream::SINK_CAPACITY);
    let run = Box::pin(async move {
        let ended = answer_each(body, limit, idle, |request| {
            let response = reply(proto.pool(), &services, request);
            let items = items.clone();
            async move {
                items
                    .send(Bytes::from(response.encode_to_vec()))
                    .await
                    .is_ok()
            }
        })
        .await;
        let answer = match ended {
            Ok(()) => Answer::StreamEnded,
            Err(message) => Answer::error(Code::InvalidArgument, message),
        };
        framing.end(&answer)
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, framing.content_type())
        .body(Envelopes::new(items_out, run, permit).boxed_unsync())
        .expect("a valid response")
}

/// Reads `body`'s length-prefixed request messages as they arrive and calls `answer` on
/// each (it says whether the caller still listens); `Err` for a malformed stream, or one
/// that sends nothing for `idle` (it would hold an in-flight slot).
async fn answer_each<F, Fut>(
    mut body: Incoming,
    limit: usize,
    idle: std::time::Duration,
    answer: F,
) -> Result<(), String>
where
    F: Fn(ReflectionRequest) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut buffer = BytesMut::new();
    loop {
        while buffer.len() >= 5 {
            let length = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
            if buffer[0] != 0 {
                return Err("reflection requests are not compressed".into());
            }
            if length > limit {
                return Err(format!("a request of {length} bytes is over the limit"));
            }
            if buffer.len() < 5 + length {
                break;
            }
            buffer.advance(5);
            let message = buffer.split_to(length);
            let request = ReflectionRequest::decode(&message[..])
                .map_err(|e| format!("not a reflection request: {e}"))?;
            if !answer(request).await {
                return Ok(());
            }
        }
        let Ok(frame) = tokio::time::timeout(idle, body.frame()).await else {
            return Err(format!("no request for {idle:?}"));
        };
        match frame {
            None => return Ok(()),
            Some(Err(e)) => return Err(format!("the request stream failed: {e}")),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buffer.extend_from_slice(&data);
                }
            }
        }
    }
}
