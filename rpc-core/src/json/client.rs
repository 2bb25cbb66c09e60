//! [`JsonClient`]: calls by service and method name with JSON values, over a connection
//! of the JSON payload codec. For tools that have no compiled-in types (a command-line
//! client, a bridge to another language); generated clients are the typed way.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;

use super::Value;
use crate::client::{status_error, Client, Connection, Method};
use crate::context::Metadata;
use crate::error::{CallError, RpcError};
use crate::protocol::{status, PayloadCodec};
use crate::Streaming;

/// Calls services by name with JSON arguments (an object by parameter name, or an array
/// in parameter order) and JSON results. Cheap to clone.
///
/// ```no_run
/// # async fn demo(connection: traitrpc_core::Connection) -> Result<(), Box<dyn std::error::Error>> {
/// // `connection` was opened with `ClientConfig::default().codec(PayloadCodec::Json)`.
/// let calls = traitrpc_core::json::JsonClient::new(connection)?;
/// let sum = calls.call("Calculator", "add", &serde_json::json!({"a": 1, "b": 2})).await?;
/// assert_eq!(sum, serde_json::json!(3));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct JsonClient {
    client: Client,
    /// Whether calls say their method is idempotent (safe to retry).
    idempotent: bool,
}

impl JsonClient {
    /// Calls over `connection`, which must speak the JSON payload codec
    /// (`ClientConfig::codec(PayloadCodec::Json)`); otherwise `RpcError::CodecUnsupported`.
    pub fn new(connection: Connection) -> Result<Self, RpcError> {
        if connection.codec() != PayloadCodec::Json {
            return Err(RpcError::CodecUnsupported {
                codec: PayloadCodec::Json,
                version: connection.protocol_version(),
            });
        }
        Ok(JsonClient {
            client: Client::new(connection),
            idempotent: false,
        })
    }

    /// A copy whose calls say that their method is `#[idempotent]` (reflection tells),
    /// as a generated client's calls of such a method do. The default is not.
    pub fn idempotent(&self, idempotent: bool) -> Self {
        JsonClient {
            idempotent,
            ..self.clone()
        }
    }

    /// A copy whose calls have `timeout` as their deadline.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        JsonClient {
            client: self.client.clone().with_timeout(timeout),
            idempotent: self.idempotent,
        }
    }

    /// A copy whose calls carry `metadata`.
    pub fn with_metadata(&self, metadata: Metadata) -> Self {
        JsonClient {
            client: self.client.clone().with_metadata(metadata),
            idempotent: self.idempotent,
        }
    }

    /// Calls a unary method: its result, or [`CallError::Application`] with the
    /// method's own error as JSON.
    pub async fn call(
        &self,
        service: &str,
        method: &str,
        args: &Value,
    ) -> Result<Value, CallError<Value>> {
        let method = method_named(service, method, self.idempotent);
        let response = self.client.send_json(&method, args).await?;
        match response.status {
            status::OK => Ok(parse(&response.payload)?),
            status::APPLICATION_ERROR => Err(CallError::Application(parse(&response.payload)?)),
            other => Err(status_error(&method, other, &response.payload).into()),
        }
    }

    /// Calls a server-streaming method: its items as they arrive. Dropping the stream
    /// cancels the call; the deadline covers the whole stream.
    pub async fn server_stream(
        &self,
        service: &str,
        method: &str,
        args: &Value,
    ) -> Result<JsonStream, RpcError> {
        let method = method_named(service, method, self.idempotent);
        let connection = self
            .client
            .connection()
            .expect("a JsonClient sends through one connection");
        let items = self
            .client
            .open_json_stream(connection, &method, args)
            .await?;
        Ok(JsonStream { items })
    }
}

/// The items of a server stream called through a [`JsonClient`]: `Ok(value)`s, then
/// one `Err` if the stream ended with an error.
#[derive(Debug)]
pub struct JsonStream {
    items: Streaming<Value>,
}

impl Stream for JsonStream {
    type Item = Result<Value, RpcError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut()
            .items
            .poll_payload(cx)
            .map(|item| item.map(|payload| payload.and_then(|bytes| parse(&bytes))))
    }
}

/// A JSON payload as a value (an empty one is `null`).
fn parse(payload: &[u8]) -> Result<Value, RpcError> {
    if payload.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(payload).map_err(|e| RpcError::Decode(e.to_string()))
}

/// The [`Method`] of `service.method`. Its names are kept for the life of the process
/// (each distinct name once), since a `Method` names them `'static`.
fn method_named(service: &str, method: &str, idempotent: bool) -> Method {
    Method {
        idempotent,
        ..Method::new(interned(service), interned(method))
    }
}

fn interned(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}
