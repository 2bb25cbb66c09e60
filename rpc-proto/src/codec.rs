//! Protobuf for the services' JSON calls: a request's protobuf bytes (or proto3 JSON)
//! read into the arguments the services' JSON dispatcher takes, and a result written as
//! the response message. Binary goes through the direct codec ([`crate::wire`]: the
//! traced shapes, no intermediate message); methods with opaque values, and the tests'
//! reference, through `prost-reflect`'s dynamic messages built from the exported
//! descriptors (no generated code, no protoc) and proto3's JSON ([`crate::json`]).

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions,
};
use serde_json::{Map, Value};
use traitrpc_core::schema::{MethodSchema, Shape, TypeShape, VariantShape};
use traitrpc_core::Router;

use crate::export::{export, ProtoExport, ServiceInput};
use crate::json::JsonMapping;
use crate::numbers::RESULT_FIELD;
use crate::wire::{Fields, Plans, Wire};

/// Why a message could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The request is not a valid message of the method's request type.
    #[error("the request is not a valid {message}: {reason}")]
    Decode {
        /// The request message's name.
        message: String,
        /// What was wrong.
        reason: String,
    },
    /// The result does not fit the method's response type (a server bug, or a type the
    /// tracer saw differently).
    #[error("the result does not fit {message}: {reason}")]
    Encode {
        /// The response message's name.
        message: String,
        /// What was wrong.
        reason: String,
    },
}

/// The protobuf side of every exportable method of a router.
#[derive(Clone)]
pub struct ProtoCodec {
    inner: Arc<Inner>,
}

struct Inner {
    export: ProtoExport,
    pool: DescriptorPool,
    /// By service, then method (looked up with borrowed names: no allocation per call).
    methods: HashMap<String, HashMap<String, MethodCodec>>,
}

impl std::fmt::Debug for ProtoCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtoCodec")
            .field("methods", &self.inner.export.methods.len())
            .finish()
    }
}

/// What [`ProtoCodec::new`] could not build.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the exported descriptors do not load: {0}")]
pub struct DescriptorError(String);

impl ProtoCodec {
    /// The codec of every service of `router` that has a schema.
    pub fn for_router(router: &Router) -> Result<Self, DescriptorError> {
        Self::new(services_of(router))
    }

    /// The codec of `services`.
    pub fn new(services: Vec<ServiceInput>) -> Result<Self, DescriptorError> {
        let export = export(&services);
        let mut pool = DescriptorPool::global();
        pool.add_file_descriptor_protos(export.files.iter().cloned())
            .map_err(|e| DescriptorError(e.to_string()))?;
        let schemas: HashMap<(&str, &str), &MethodSchema> = services
            .iter()
            .flat_map(|s| {
                s.schema
                    .methods
                    .iter()
                    .map(move |m| ((s.schema.service.as_str(), m.name.as_str()), m))
            })
            .collect();
        let mut methods = HashMap::new();
        for exported in &export.methods {
            let schema = schemas[&(exported.service.as_str(), exported.method.as_str())];
            let request = pool
                .get_message_by_name(&exported.request)
                .ok_or_else(|| DescriptorError(format!("{} is missing", exported.request)))?;
            let response = pool
                .get_message_by_name(&exported.response)
                .ok_or_else(|| DescriptorError(format!("{} is missing", exported.response)))?;
            methods
                .entry(exported.service.clone())
                .or_insert_with(HashMap::new)
                .insert(
                    exported.method.clone(),
                    MethodCodec {
                        direct: Direct::new(schema).map(Arc::new),
                        schema: Arc::new(schema.clone()),
                        request,
                        response,
                    },
                );
        }
        Ok(ProtoCodec {
            inner: Arc::new(Inner {
                export,
                pool,
                methods,
            }),
        })
    }

    /// The export the codec serves (files, skipped methods).
    pub fn export(&self) -> &ProtoExport {
        &self.inner.export
    }

    /// The descriptor pool: the exported files and the well-known types they import.
    pub fn pool(&self) -> &DescriptorPool {
        &self.inner.pool
    }

    /// Method `method` of service `service`, if it was exported.
    pub fn method(&self, service: &str, method: &str) -> Option<&MethodCodec> {
        self.inner.methods.get(service)?.get(method)
    }

    /// The `.proto` text of every exported file, in order: `(file name, text)`.
    pub fn proto_files(&self) -> Vec<(String, String)> {
        let export = &self.inner.export;
        export
            .files
            .iter()
            .map(|f| {
                (
                    f.name().to_string(),
                    crate::to_proto_text(f, &export.skipped),
                )
            })
            .collect()
    }
}

/// The services of `router` with a schema, as export input.
pub fn services_of(router: &Router) -> Vec<ServiceInput> {
    router
        .service_names()
        .filter_map(|name| router.get(name))
        .filter_map(|service| {
            let schema = service.schema()?.clone();
            let idempotent = service
                .json()
                .map(|json| {
                    json.json_methods()
                        .iter()
                        .filter(|m| m.idempotent)
                        .map(|m| m.name.to_string())
                        .collect()
                })
                .unwrap_or_default();
            Some(ServiceInput { schema, idempotent })
        })
        .collect()
}

/// One method's messages.
#[derive(Debug, Clone)]
pub struct MethodCodec {
    schema: Arc<MethodSchema>,
    request: MessageDescriptor,
    response: MessageDescriptor,
    /// The direct codec's plans, for a method without opaque values (those go through
    /// prost-reflect's `google.protobuf.Value`).
    direct: Option<Arc<Direct>>,
}

/// What the direct codec needs for one method, computed once.
#[derive(Debug)]
struct Direct {
    plans: Plans,
    request: Fields,
}

impl Direct {
    fn new(schema: &MethodSchema) -> Option<Direct> {
        let opaque = schema.params.iter().any(|p| has_opaque(&p.shape))
            || has_opaque(&schema.result)
            || schema.types.values().any(|t| match t {
                TypeShape::NewtypeStruct(s) => has_opaque(s),
                TypeShape::TupleStruct(items) => items.iter().any(has_opaque),
                TypeShape::Struct { fields, .. } => fields.iter().any(|f| has_opaque(&f.shape)),
                TypeShape::Enum(variants) => variants.iter().any(|v| match &v.shape {
                    VariantShape::Unit => false,
                    VariantShape::Newtype(s) => has_opaque(s),
                    VariantShape::Tuple(items) => items.iter().any(has_opaque),
                    VariantShape::Struct(fields) => fields.iter().any(|f| has_opaque(&f.shape)),
                }),
                TypeShape::UnitStruct => false,
            });
        if opaque {
            return None;
        }
        Some(Direct {
            plans: Plans::new(&schema.types),
            request: Fields::new(schema.params.iter().map(|p| (p.name.as_str(), &p.shape))),
        })
    }
}

/// Whether `shape` holds an opaque value anywhere (not through named types).
fn has_opaque(shape: &Shape) -> bool {
    match shape {
        Shape::Opaque(_) => true,
        Shape::Option(inner) | Shape::Seq(inner) => has_opaque(inner),
        Shape::Map(k, v) => has_opaque(k) || has_opaque(v),
        Shape::Tuple(items) => items.iter().any(has_opaque),
        _ => false,
    }
}

impl MethodCodec {
    /// The method's schema.
    pub fn schema(&self) -> &MethodSchema {
        &self.schema
    }

    /// The arguments (an object by parameter name, serde's JSON) in a request message's
    /// protobuf bytes.
    pub fn decode_request(&self, bytes: &[u8]) -> Result<Value, ProtoError> {
        let Some(direct) = &self.direct else {
            return self.decode_request_dynamic(bytes);
        };
        let wire = Wire {
            types: &self.schema.types,
            plans: &direct.plans,
        };
        wire.read_message(bytes, &direct.request, 0)
            .map(Value::Object)
            .map_err(|e| ProtoError::Decode {
                message: self.request.full_name().to_string(),
                reason: e.0,
            })
    }

    /// [`MethodCodec::decode_request`] through prost-reflect's dynamic messages: the
    /// reference the direct codec is tested against, and the path for opaque values.
    pub fn decode_request_dynamic(&self, bytes: &[u8]) -> Result<Value, ProtoError> {
        let message = DynamicMessage::decode(self.request.clone(), bytes).map_err(|e| {
            ProtoError::Decode {
                message: self.request.full_name().to_string(),
                reason: e.to_string(),
            }
        })?;
        let options = SerializeOptions::new().stringify_64_bit_integers(false);
        let json = message
            .serialize_with_options(serde_json::value::Serializer, &options)
            .map_err(|e| ProtoError::Decode {
                message: self.request.full_name().to_string(),
                reason: e.to_string(),
            })?;
        Ok(self.arguments_from_proto_json(json))
    }

    /// The arguments (serde's JSON) in a request message's proto3 JSON.
    pub fn arguments_from_proto_json(&self, json: Value) -> Value {
        let object = match json {
            Value::Object(object) => object,
            // Not an object: serde's dispatcher names what is wrong.
            other => return other,
        };
        let mapping = JsonMapping::new(&self.schema.types);
        let params = self
            .schema
            .params
            .iter()
            .map(|p| (p.name.as_str(), &p.shape));
        Value::Object(mapping.serde_fields_of(object, params))
    }

    /// A result (serde's JSON) as the response message's proto3 JSON: `{"result": ...}`
    /// (`{}` for `()`).
    pub fn result_to_proto_json(&self, result: Value) -> Value {
        let mut object = Map::new();
        if self.schema.result != Shape::Unit {
            let mapping = JsonMapping::new(&self.schema.types);
            let value = mapping.proto_of(result, &self.schema.result);
            if !value.is_null() {
                object.insert("result".into(), value);
            }
        }
        Value::Object(object)
    }

    /// A result (serde's JSON) as the response message's protobuf bytes.
    pub fn encode_result(&self, result: Value) -> Result<Vec<u8>, ProtoError> {
        let Some(direct) = &self.direct else {
            return self.encode_result_dynamic(result);
        };
        let wire = Wire {
            types: &self.schema.types,
            plans: &direct.plans,
        };
        // The response's one field, `result` (none for `()`).
        let mut out = Vec::new();
        if self.schema.result != Shape::Unit {
            wire.write_value(RESULT_FIELD, &result, &self.schema.result, &mut out)
                .map_err(|e| ProtoError::Encode {
                    message: self.response.full_name().to_string(),
                    reason: format!("field `result`: {}", e.0),
                })?;
        }
        Ok(out)
    }

    /// [`MethodCodec::encode_result`] through prost-reflect's dynamic messages (the
    /// reference, and the path for opaque values).
    pub fn encode_result_dynamic(&self, result: Value) -> Result<Vec<u8>, ProtoError> {
        let json = self.result_to_proto_json(result);
        let message = DynamicMessage::deserialize_with_options(
            self.response.clone(),
            json,
            &DeserializeOptions::new(),
        )
        .map_err(|e| ProtoError::Encode {
            message: self.response.full_name().to_string(),
            reason: e.to_string(),
        })?;
        Ok(message.encode_to_vec())
    }
}
