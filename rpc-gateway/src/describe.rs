//! What the gateway says about itself: the services and methods it serves (reflection,
//! `GET /.well-known/rrpc/services`) and an OpenAPI 3.1 document of its paths
//! (`GET /openapi.json`), both built from the services' own JSON method lists, so they
//! cannot disagree with what is served.
//!
//! Argument and result types are not described yet (their schemas are `{}`, any JSON):
//! the document gives every path, parameter name, method and error shape.

use rpc_core::json::{JsonMethod, MethodKind};
use rpc_core::Router;
use serde_json::{json, Map, Value};

/// The path of the reflection listing.
pub const SERVICES_PATH: &str = "/.well-known/rrpc/services";

/// The path of the OpenAPI document.
pub const OPENAPI_PATH: &str = "/openapi.json";

fn kind_name(kind: MethodKind) -> &'static str {
    match kind {
        MethodKind::Unary => "unary",
        MethodKind::ServerStream => "server_stream",
        MethodKind::ClientStream => "client_stream",
        MethodKind::BidiStream => "bidi_stream",
    }
}

/// Every JSON-callable service with its methods, sorted by name.
fn services(router: &Router) -> Vec<(&'static str, &'static [JsonMethod])> {
    let mut services: Vec<_> = router
        .service_names()
        .filter_map(|name| {
            let json = router.get(name)?.json()?;
            Some((name, json.json_methods()))
        })
        .collect();
    services.sort_by_key(|(name, _)| *name);
    services
}

/// The reflection listing: `{"services": [{"name", "methods": [{"name", "params",
/// "kind", "idempotent", "path"}]}]}`.
pub fn listing(router: &Router) -> Value {
    let services: Vec<Value> = services(router)
        .into_iter()
        .map(|(service, methods)| {
            let methods: Vec<Value> = methods
                .iter()
                .map(|m| {
                    json!({
                        "name": m.name,
                        "params": m.params,
                        "kind": kind_name(m.kind),
                        "idempotent": m.idempotent,
                        "path": format!("/{service}/{}", m.name),
                    })
                })
                .collect();
            json!({ "name": service, "methods": methods })
        })
        .collect();
    json!({ "services": services })
}

/// The OpenAPI 3.1 document of every unary method (streaming methods are not served over
/// HTTP yet).
pub fn openapi(router: &Router) -> Value {
    let mut paths = Map::new();
    for (service, methods) in services(router) {
        for method in methods.iter().filter(|m| m.kind == MethodKind::Unary) {
            let properties: Map<String, Value> = method
                .params
                .iter()
                .map(|p| (p.to_string(), json!({})))
                .collect();
            let arguments = json!({
                "type": "object",
                "properties": properties,
                "additionalProperties": false,
            });
            let responses = json!({
                "200": {
                    "description": "The method's result.",
                    "content": { "application/json": { "schema": {} } },
                },
                "default": {
                    "description": "A Connect error (a method's own error is `failed_precondition`, with it as `error`).",
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ConnectError" } } },
                },
            });
            let timeout = json!({
                "name": "Connect-Timeout-Ms",
                "in": "header",
                "required": false,
                "description": "The call's deadline in milliseconds.",
                "schema": { "type": "string", "pattern": "^[0-9]{1,10}$" },
            });
            let operation = format!("{service}.{}", method.name);
            let mut item = Map::new();
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
            paths.insert(format!("/{service}/{}", method.name), Value::Object(item));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "rrpc services",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Generated by rpc-gateway from the services it serves (the unary JSON subset of the Connect protocol).",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "ConnectError": {
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
                },
            },
        },
    })
}
