//! What the gateway says about itself: the exported `.proto` files ([`PROTO_PATH`]), the
//! services and methods it serves (reflection,
//! `GET /.well-known/rrpc/services`, the same descriptions as the native reflection
//! service `rpc.reflection.v1.Reflection`) and an OpenAPI 3.1 document of its paths
//! (`GET /openapi.json`), both built from the services' own JSON method lists and
//! schemas, so they cannot disagree with what is served.
//!
//! Argument and result types are described exactly when the services are built with the
//! `schema` feature and their types derive `schemars::JsonSchema`; otherwise as `{}` (any
//! JSON).

use serde_json::{json, Map, Value};
use traitrpc_core::json::schema::relocate_defs;
use traitrpc_core::json::MethodKind;
use traitrpc_core::reflection::{describe_router, MethodDescription};
use traitrpc_core::Router;

/// The path of the reflection listing.
pub const SERVICES_PATH: &str = "/.well-known/rrpc/services";

/// The path of the exported `.proto` files: a JSON list there, each file at
/// `{PROTO_PATH}/{name}` (`/.well-known/rrpc/proto/shop.proto`).
pub const PROTO_PATH: &str = "/.well-known/rrpc/proto";

/// The path of the OpenAPI document.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// The exported `.proto` files (`GET /.well-known/rrpc/proto`): `{"files": [{"name",
/// "path"}], "skipped": [{"service", "method", "reason"}]}`.
pub fn proto_listing(proto: &traitrpc_proto::ProtoCodec) -> Value {
    let export = proto.export();
    let files: Vec<Value> = export
        .files
        .iter()
        .map(|f| json!({ "name": f.name(), "path": format!("{PROTO_PATH}/{}", f.name()) }))
        .collect();
    let skipped: Vec<Value> = export
        .skipped
        .iter()
        .map(|s| json!({ "service": s.service, "method": s.method, "reason": s.reason }))
        .collect();
    json!({ "files": files, "skipped": skipped })
}

/// The text of the exported file `name`, if there is one.
pub fn proto_file(proto: &traitrpc_proto::ProtoCodec, name: &str) -> Option<String> {
    proto
        .proto_files()
        .into_iter()
        .find(|(file, _)| file == name)
        .map(|(_, text)| text)
}

/// The reflection listing: `{"services": [{"name", "methods": [{"name", "kind",
/// "idempotent", "params", "arguments", "result", "error", "path"}]}]}`, the schemas as
/// JSON Schema objects.
pub fn listing(router: &Router) -> Value {
    let services: Vec<Value> = describe_router(router)
        .into_iter()
        .map(|service| {
            let methods: Vec<Value> = service
                .methods
                .iter()
                .map(|m| {
                    let mut method = serde_json::to_value(m).expect("descriptions are JSON");
                    method["path"] = Value::from(format!("/{}/{}", service.name, m.name));
                    method
                })
                .collect();
            json!({ "name": service.name, "methods": methods })
        })
        .collect();
    json!({ "services": services })
}

/// Where the OpenAPI document keeps the types the schemas refer to.
const COMPONENT_SCHEMAS: &str = "#/components/schemas/";

/// A method's schema for the OpenAPI document: its references moved to the components.
fn component_schema(
    schema: &traitrpc_core::reflection::JsonText,
    defs: &mut Map<String, Value>,
) -> Value {
    let mut schema = schema.value();
    relocate_defs(&mut schema, COMPONENT_SCHEMAS, defs);
    schema
}

/// The OpenAPI 3.1 document of every method the gateway serves: unary methods as JSON
/// request/response pairs, server streams as Connect streaming (`application/connect+json`).
pub fn openapi(router: &Router) -> Value {
    let mut paths = Map::new();
    let mut components = Map::new();
    for service in describe_router(router) {
        let served = service
            .methods
            .iter()
            .filter(|m| matches!(m.kind, MethodKind::Unary | MethodKind::ServerStream));
        for method in served {
            let item = path_item(&service.name, method, &mut components);
            paths.insert(format!("/{}/{}", service.name, method.name), item);
        }
    }
    components.insert(
        "ConnectError".into(),
        json!({
            "type": "object",
            "required": ["code"],
            "properties": {
                "code": {
                    "type": "string",
                    "enum": [
                        "canceled", "unknown", "invalid_argument", "deadline_exceeded",
                        "not_found", "failed_precondition", "aborted",
                        "resource_exhausted", "unimplemented", "internal",
                        "unavailable", "unauthenticated", "permission_denied",
                    ],
                },
                "message": { "type": "string" },
                "error": { "description": "The method's own error, for failed_precondition." },
            },
        }),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "traitrpc services",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Generated by traitrpc-gateway from the services it serves (Connect's JSON: unary calls, and server streams in Connect's streaming envelopes).",
        },
        "paths": paths,
        "components": { "schemas": components },
    })
}

/// The OpenAPI path item of one method.
fn path_item(service: &str, method: &MethodDescription, defs: &mut Map<String, Value>) -> Value {
    let arguments = component_schema(&method.arguments, defs);
    let result = component_schema(&method.result, defs);
    let mut error = json!({ "$ref": format!("{COMPONENT_SCHEMAS}ConnectError") });
    if let Some(own) = &method.error {
        let own = component_schema(own, defs);
        error = json!({
            "allOf": [error, { "properties": { "error": own } }],
        });
    }
    let timeout = json!({
        "name": "Connect-Timeout-Ms",
        "in": "header",
        "required": false,
        "description": "The call's deadline in milliseconds.",
        "schema": { "type": "string", "pattern": "^[0-9]{1,10}$" },
    });
    let operation = format!("{service}.{}", method.name);
    let mut item = Map::new();
    if method.kind == MethodKind::ServerStream {
        item.insert(
            "post".into(),
            json!({
                "operationId": operation,
                "tags": [service],
                "summary": "A server stream (Connect streaming, JSON).",
                "description": "The request body is one Connect envelope (flags 0, u32 big-endian length) around the arguments; the response is a sequence of envelopes, one per item (each item as `result` describes), then an end-of-stream envelope (flags 0x02) with `{}` or `{\"error\": ConnectError}`.",
                "parameters": [timeout],
                "requestBody": {
                    "required": false,
                    "content": { "application/connect+json": { "schema": arguments } },
                },
                "responses": {
                    "200": {
                        "description": "The stream's envelopes: items, then the end of the stream.",
                        "content": { "application/connect+json": { "schema": result } },
                    },
                },
            }),
        );
        return Value::Object(item);
    }
    let responses = json!({
        "200": {
            "description": "The method's result.",
            "content": { "application/json": { "schema": result } },
        },
        "default": {
            "description": "A Connect error (a method's own error is `failed_precondition`, with it as `error`).",
            "content": { "application/json": { "schema": error } },
        },
    });
    item.insert(
        "post".into(),
        json!({
            "operationId": operation,
            "tags": [service],
            "parameters": [timeout],
            "requestBody": {
                "required": false,
                "content": { "application/json": { "schema": arguments } },
            },
            "responses": responses,
        }),
    );
    if method.idempotent {
        item.insert(
            "get".into(),
            json!({
                "operationId": format!("{operation}.get"),
                "tags": [service],
                "parameters": [
                    timeout,
                    {
                        "name": "message",
                        "in": "query",
                        "required": false,
                        "description": "The arguments as JSON.",
                        "content": { "application/json": { "schema": arguments } },
                    },
                    {
                        "name": "encoding",
                        "in": "query",
                        "required": false,
                        "schema": { "type": "string", "enum": ["json"] },
                    },
                ],
                "responses": responses,
            }),
        );
    }
    Value::Object(item)
}
