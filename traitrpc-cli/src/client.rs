//! One client for both protocols: reflection (and schema snapshots), unary calls, server
//! streams and health, over the native protocol ([`crate::native`]) or the HTTP gateway
//! ([`crate::http`]).

use std::fmt;

use futures::stream::BoxStream;
use serde_json::Value;
use traitrpc::RpcError;

use crate::cli::Options;
use crate::http::HttpClient;
use crate::model::ServiceInfo;
use crate::native::NativeClient;
use crate::target::Target;

/// The reflection service's wire name.
pub const REFLECTION: &str = "rpc.reflection.v1.Reflection";
/// The health service's wire name.
pub const HEALTH: &str = "rpc.health.v1.Health";

/// Why a call failed.
#[derive(Debug)]
pub enum Failure {
    /// The method returned its own error (this JSON).
    Application(Value),
    /// The native protocol's error.
    Rpc(RpcError),
    /// The gateway's Connect error.
    Http {
        /// Connect's code (`not_found`, `invalid_argument`, ...).
        code: String,
        /// The gateway's message.
        message: String,
    },
    /// No answer within the deadline (measured on this side).
    Deadline,
    /// Talking HTTP failed, or the answer was not what the gateway sends.
    Transport(String),
}

impl Failure {
    /// Whether the deadline passed (on either side).
    pub fn is_deadline(&self) -> bool {
        match self {
            Failure::Deadline | Failure::Rpc(RpcError::DeadlineExceeded) => true,
            Failure::Http { code, .. } => code == "deadline_exceeded",
            _ => false,
        }
    }

    /// Whether the server hosts no such service or method. A gateway says so with
    /// `unimplemented` (Connect's code for it), or `not_found` before version 6.
    pub fn is_not_found(&self) -> bool {
        match self {
            Failure::Rpc(RpcError::UnknownService { .. } | RpcError::UnknownMethod { .. }) => true,
            Failure::Http { code, message } => {
                code == "not_found"
                    || (code == "unimplemented"
                        && (message.starts_with("no service named")
                            || message.contains("has no method")))
            }
            _ => false,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Application(error) => write!(f, "the method returned an error: {error}"),
            Failure::Rpc(error) => write!(f, "{error}"),
            Failure::Http { code, message, .. } => {
                write!(f, "{}: {message}", code.replace('_', " "))
            }
            Failure::Deadline => f.write_str("deadline exceeded"),
            Failure::Transport(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Failure {}

impl From<RpcError> for Failure {
    fn from(error: RpcError) -> Self {
        Failure::Rpc(error)
    }
}

/// A server stream's items as they arrive; an `Err` ends it.
pub type Items = BoxStream<'static, Result<Value, Failure>>;

/// A connected client of either protocol.
pub enum Client {
    /// The native protocol with JSON payloads.
    Native(NativeClient),
    /// The HTTP gateway.
    Http(HttpClient),
}

impl Client {
    /// Connects to `target` (over HTTP, checks the options only: each request has a
    /// connection of its own).
    pub async fn connect(target: &Target, options: &Options) -> anyhow::Result<Client> {
        Ok(match target {
            Target::Http(http) => Client::Http(HttpClient::new(http.clone(), options)?),
            native => Client::Native(NativeClient::connect(native, options).await?),
        })
    }

    /// Every service the server lists.
    pub async fn list(&self) -> Result<Vec<ServiceInfo>, Failure> {
        match self {
            Client::Native(native) => native.list().await,
            Client::Http(http) => http.list().await,
        }
    }

    /// The service named `name`, if the server hosts it.
    pub async fn describe(&self, name: &str) -> Result<Option<ServiceInfo>, Failure> {
        match self {
            Client::Native(native) => native.describe(name).await,
            Client::Http(http) => Ok(http.list().await?.into_iter().find(|s| s.name == name)),
        }
    }

    /// The schema snapshot of the service named `name` (the reflection service's
    /// `schema()`, over either protocol), if the server hosts it and it has one.
    pub async fn schema(&self, name: &str) -> Result<Option<Value>, Failure> {
        let args = serde_json::json!({ "service": name });
        let snapshot = self.call(REFLECTION, "schema", &args).await?;
        Ok(Some(snapshot).filter(|snapshot| !snapshot.is_null()))
    }

    /// Calls a unary method.
    pub async fn call(&self, service: &str, method: &str, args: &Value) -> Result<Value, Failure> {
        match self {
            Client::Native(native) => native.call(service, method, args).await,
            Client::Http(http) => http.call(service, method, args).await,
        }
    }

    /// Calls a server-streaming method.
    pub async fn stream(
        &self,
        service: &str,
        method: &str,
        args: &Value,
    ) -> Result<Items, Failure> {
        match self {
            Client::Native(native) => native.stream(service, method, args).await,
            Client::Http(http) => http.stream(service, method, args).await,
        }
    }

    /// The health status of `service` (`""`: the server), and a note when it is
    /// inferred rather than reported.
    pub async fn health(&self, service: &str) -> Result<(String, Option<String>), Failure> {
        let args = serde_json::json!({ "service": service });
        let checked = self.call(HEALTH, "check", &args).await;
        let Client::Http(http) = self else {
            return Ok((status_text(checked?), None));
        };
        match checked {
            Err(failure) if failure.is_not_found() => {}
            checked => return Ok((status_text(checked?), None)),
        }
        // A gateway serves the router it was given, which has no health service unless
        // the application added one: it is serving if it answers, and lists the service.
        let services = http.list().await?;
        let listed = service.is_empty() || services.iter().any(|s| s.name == service);
        let status = if listed { "Serving" } else { "ServiceUnknown" };
        let meaning = match (service.is_empty(), listed) {
            (true, _) => "it answers".to_string(),
            (false, true) => format!("it answers and lists `{service}`"),
            (false, false) => format!("it answers but does not list `{service}`"),
        };
        Ok((
            status.to_string(),
            Some(format!(
                "the gateway hosts no {HEALTH} service: {status} means {meaning}"
            )),
        ))
    }
}

/// A status as text (`"Serving"` is the JSON string `"Serving"`).
fn status_text(status: Value) -> String {
    match status {
        Value::String(status) => status,
        other => other.to_string(),
    }
}
