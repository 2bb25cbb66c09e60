//! The codec of a request: serde's JSON (curl, browsers), proto3's JSON (Connect and gRPC
//! clients generated from the exported `.proto`, which say so with
//! `Connect-Protocol-Version` or a `+json` gRPC content type), or protobuf binary. How its
//! arguments are read, and how its results are written ([`Render`]).

use serde_json::Value;
use traitrpc_proto::MethodCodec;

use crate::call::Render;
use crate::connect::Code;
use crate::Shared;

/// The message encoding on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    /// JSON text.
    Json,
    /// Protobuf binary.
    Proto,
}

/// The codec chosen for one call, with the method's protobuf form where it has one.
#[derive(Debug, Clone)]
pub(crate) struct Choice<'a> {
    codec: Codec,
    /// JSON is proto3's mapping of the request and response messages (not serde's).
    proto3_json: bool,
    method: Option<&'a MethodCodec>,
}

impl<'a> Choice<'a> {
    /// The choice for `service.method` in `codec`. Binary protobuf needs the method in
    /// the export, else `unimplemented` says why it is not there; proto3's JSON is used
    /// for an exported method and serde's otherwise (a method with no protobuf form is
    /// still callable in JSON, whoever asks).
    pub(crate) fn new(
        shared: &'a Shared,
        service: &str,
        method: &str,
        codec: Codec,
        proto3_json: bool,
    ) -> Result<Choice<'a>, (Code, String)> {
        let found = shared
            .proto
            .as_ref()
            .and_then(|p| p.method(service, method));
        if codec == Codec::Proto && found.is_none() {
            return Err((Code::Unimplemented, not_exported(shared, service, method)));
        }
        Ok(Choice {
            codec,
            proto3_json,
            method: found,
        })
    }

    /// The arguments in one request message (already expanded): an object by parameter
    /// name, in serde's JSON.
    pub(crate) fn arguments(&self, message: &[u8]) -> Result<Value, (Code, String)> {
        let invalid = |message: String| (Code::InvalidArgument, message);
        match (self.codec, self.method) {
            (Codec::Proto, Some(method)) => method
                .decode_request(message)
                .map_err(|e| invalid(e.to_string())),
            _ => {
                let json = traitrpc_core::json::parse_arguments(message)
                    .map_err(|e| invalid(format!("the message is not valid JSON: {e}")))?;
                match (self.method, self.proto3_json) {
                    (Some(method), true) => Ok(method.arguments_from_proto_json(json)),
                    _ => Ok(json),
                }
            }
        }
    }

    /// Whether [`Choice::arguments`] gives the caller's serde JSON as it came, which may
    /// still use proto3's spellings (64-bit integers as strings, bytes as base64): the
    /// call reads those by the method's schema. Arguments from protobuf or proto3's JSON
    /// were read by the schema already.
    pub(crate) fn arguments_as_sent(&self) -> bool {
        self.method.is_none() || (self.codec == Codec::Json && !self.proto3_json)
    }

    /// How results are written.
    pub(crate) fn render(&self) -> Render {
        match (self.codec, self.method, self.proto3_json) {
            (Codec::Proto, Some(method), _) => Render::Proto(method.clone()),
            (Codec::Json, Some(method), true) => Render::ProtoJson(method.clone()),
            _ => Render::Serde,
        }
    }

    /// The content type of a unary Connect answer.
    pub(crate) fn unary_content_type(&self) -> &'static str {
        match self.codec {
            Codec::Json => "application/json",
            Codec::Proto => "application/proto",
        }
    }

    /// The content type of a Connect stream's answer.
    pub(crate) fn stream_content_type(&self) -> &'static str {
        match self.codec {
            Codec::Json => "application/connect+json",
            Codec::Proto => "application/connect+proto",
        }
    }
}

/// Why `service.method` has no protobuf form.
fn not_exported(shared: &Shared, service: &str, method: &str) -> String {
    let Some(proto) = &shared.proto else {
        return "the gateway has no protobuf form of its services (see its log)".into();
    };
    match proto
        .export()
        .skipped
        .iter()
        .find(|s| s.service == service && s.method == method)
    {
        Some(skipped) => format!(
            "`{service}.{method}` has no protobuf form ({}); call it with JSON",
            skipped.reason
        ),
        None => match shared.router.get(service) {
            None => format!("no service named `{service}`"),
            Some(_) => format!("`{service}` has no method `{method}`"),
        },
    }
}
