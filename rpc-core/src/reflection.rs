//! The built-in reflection service, `rpc.reflection.v1.Reflection`: what a server hosts,
//! so that tools and clients in other languages need nothing compiled in. It lists every
//! service with its methods (kind, idempotence, parameter names) and the JSON Schemas of
//! their arguments and results ([`crate::json::schema`]; exact with the `schema`
//! feature). Every [`Server`](crate::Server) hosts it unless its router has a service of
//! that name already. Call it in bincode (`ReflectionClient`) or in JSON (the
//! command-line client does).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! # #[traitrpc_core::service] pub trait Ping { async fn ping(&self, n: u8) -> u8; }
//! # struct P; impl Ping for P { async fn ping(&self, n: u8) -> u8 { n } }
//! use traitrpc_core::reflection::ReflectionClient;
//! let (listener, connector) = traitrpc_core::memory::listener();
//! let server = traitrpc_core::Server::new(PingServer::new(P)).serve(listener, ());
//! let reflection = ReflectionClient::new(connector.connect().await?);
//! let ping = reflection.describe("Ping".into()).await?.expect("hosted");
//! assert_eq!(ping.methods[0].name, "ping");
//! assert_eq!(ping.methods[0].params, ["n"]);
//! # server.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::json::{JsonService, MethodKind};
use crate::server::{Router, Service};

/// The wire name of the reflection service.
pub const SERVICE_NAME: &str = "rpc.reflection.v1.Reflection";

/// A JSON document carried as its text: a string in bincode, the document itself in JSON
/// (so a JSON caller reads a schema as an object, not as a string to parse again).
#[derive(Clone, PartialEq, Eq)]
pub struct JsonText(pub String);

impl JsonText {
    /// The document as a value (`null` if the text is not JSON).
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }
}

impl fmt::Debug for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&Value> for JsonText {
    fn from(value: &Value) -> Self {
        JsonText(value.to_string())
    }
}

/// In JSON a schema document: any JSON.
#[cfg(feature = "schema")]
impl schemars::JsonSchema for JsonText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "JsonDocument".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "description": "A JSON document (here a JSON Schema)." })
    }
}

impl Serialize for JsonText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            self.value().serialize(serializer)
        } else {
            serializer.serialize_str(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            Value::deserialize(deserializer).map(|value| JsonText::from(&value))
        } else {
            String::deserialize(deserializer).map(JsonText)
        }
    }
}

/// A hosted service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ServiceDescription {
    /// Its wire name.
    pub name: String,
    /// Its methods, in declaration order.
    pub methods: Vec<MethodDescription>,
}

/// One method of a hosted service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MethodDescription {
    /// Its wire name.
    pub name: String,
    /// How it exchanges values.
    pub kind: MethodKind,
    /// Whether it is `#[idempotent]` (safe to retry).
    pub idempotent: bool,
    /// Its parameter names, in order (a streaming parameter excluded).
    pub params: Vec<String>,
    /// JSON Schema of its arguments as a JSON call sends them (an object by parameter
    /// name).
    pub arguments: JsonText,
    /// JSON Schema of its result (of a stream: each item).
    pub result: JsonText,
    /// JSON Schema of its own error, for a method returning `Result`.
    pub error: Option<JsonText>,
}

/// The reflection service: what the server hosts.
#[traitrpc_macros::service(crate = "crate", name = "rpc.reflection.v1.Reflection")]
pub trait Reflection {
    /// Every hosted service callable in JSON, by name.
    #[idempotent]
    async fn list(&self) -> Vec<ServiceDescription>;
    /// The service named `service`, if it is hosted.
    #[idempotent]
    async fn describe(&self, service: String) -> Option<ServiceDescription>;
    /// The schema snapshot of the service named `service` ([`crate::schema`]: the
    /// shapes of its methods' values and their fingerprints), if it is hosted and has
    /// one: what the breaking-change checker compares (`traitrpc schema diff`).
    #[idempotent]
    async fn schema(&self, service: String) -> Option<JsonText>;
}

/// The descriptions a reflection service answers with, fixed when the server is built.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    services: Arc<Vec<ServiceDescription>>,
    /// Schema snapshots by service name.
    schemas: Arc<Vec<(String, JsonText)>>,
}

impl Catalog {
    /// The catalog of `router`'s services, and of the reflection service itself.
    pub fn of(router: &Router) -> Self {
        let mut services = describe_router(router);
        if router.get(SERVICE_NAME).is_none() {
            services.push(describe_service(&ReflectionServer::new(Catalog::default())));
            services.sort_by(|a, b| a.name.cmp(&b.name));
        }
        let mut schemas: Vec<(String, JsonText)> = router
            .service_names()
            .filter_map(|name| router.get(name)?.schema())
            .chain(
                router
                    .get(SERVICE_NAME)
                    .is_none()
                    .then(ReflectionClient::service_schema),
            )
            .map(|schema| (schema.service.clone(), JsonText(schema.to_snapshot())))
            .collect();
        schemas.sort_by(|a, b| a.0.cmp(&b.0));
        Catalog {
            services: Arc::new(services),
            schemas: Arc::new(schemas),
        }
    }
}

impl Reflection for Catalog {
    async fn list(&self) -> Vec<ServiceDescription> {
        self.services.as_ref().clone()
    }

    async fn describe(&self, service: String) -> Option<ServiceDescription> {
        self.services.iter().find(|s| s.name == service).cloned()
    }

    async fn schema(&self, service: String) -> Option<JsonText> {
        self.schemas
            .iter()
            .find(|(name, _)| *name == service)
            .map(|(_, schema)| schema.clone())
    }
}

/// Every service of `router` that is callable in JSON, sorted by name.
pub fn describe_router(router: &Router) -> Vec<ServiceDescription> {
    let mut services: Vec<ServiceDescription> = router
        .service_names()
        .filter_map(|name| router.get(name))
        .filter(|service| service.json().is_some())
        .map(|service| describe_service(&**service))
        .collect();
    services.sort_by(|a, b| a.name.cmp(&b.name));
    services
}

/// The description of `service` (no methods if it is not callable in JSON).
pub fn describe_service(service: &dyn Service) -> ServiceDescription {
    let methods = service.json().map_or_else(Vec::new, describe_methods);
    ServiceDescription {
        name: service.name().to_string(),
        methods,
    }
}

fn describe_methods(json: &dyn JsonService) -> Vec<MethodDescription> {
    json.json_methods()
        .iter()
        .map(|method| {
            let schemas = json.json_schemas(method.name);
            let any = || JsonText("{}".into());
            MethodDescription {
                name: method.name.to_string(),
                kind: method.kind,
                idempotent: method.idempotent,
                params: method.params.iter().map(|p| p.to_string()).collect(),
                arguments: schemas
                    .as_ref()
                    .map_or_else(any, |s| JsonText::from(&s.arguments)),
                result: schemas
                    .as_ref()
                    .map_or_else(any, |s| JsonText::from(&s.result)),
                error: schemas
                    .as_ref()
                    .and_then(|s| s.error.as_ref().map(JsonText::from)),
            }
        })
        .collect()
}
