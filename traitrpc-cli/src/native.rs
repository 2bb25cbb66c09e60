//! The native protocol with JSON payloads: [`traitrpc::json::JsonClient`] over TCP or a Unix
//! socket, reflection through `rpc.reflection.v1.Reflection`.

use anyhow::Context as _;
use futures::StreamExt;
use serde_json::{json, Value};
use traitrpc::json::JsonClient;
use traitrpc::{CallError, ClientConfig, Metadata, PayloadCodec, RpcError};

use crate::cli::Options;
use crate::client::{Failure, Items, REFLECTION};
use crate::model::{parse_services, ServiceInfo};
use crate::target::Target;

/// A JSON client of one native connection.
pub struct NativeClient {
    client: JsonClient,
}

impl NativeClient {
    /// Connects to `target` (within the timeout) and prepares the calls' deadline and
    /// metadata.
    pub async fn connect(target: &Target, options: &Options) -> anyhow::Result<NativeClient> {
        let mut metadata = Metadata::new();
        for (key, value) in &options.metadata {
            metadata
                .insert(key, value)
                .map_err(|e| crate::Usage(format!("--metadata {key}: {e}")))?;
        }
        let config = ClientConfig::default()
            .codec(PayloadCodec::Json)
            .connect_timeout(options.timeout)
            .default_timeout(options.timeout);
        let connected = match target {
            Target::Native(addr) => traitrpc::connect_with_config(addr.as_str(), config).await,
            #[cfg(unix)]
            Target::Unix(path) => traitrpc::unix::connect_with_config(path, config).await,
            #[cfg(not(unix))]
            Target::Unix(_) => {
                return Err(crate::Usage("unix: addresses need a Unix system".into()).into())
            }
            Target::Http(_) => unreachable!("HTTP targets have a client of their own"),
        };
        let connection = connected.map_err(|error| {
            let hint = match error {
                RpcError::Protocol(_) | RpcError::ConnectionClosed { .. } => {
                    format!("\nhint: if {target} is an HTTP gateway, write http://{target}")
                }
                _ => String::new(),
            };
            anyhow::anyhow!("{error}{hint}")
        })?;
        let client = JsonClient::new(connection)
            .with_context(|| format!("{target} does not take JSON payloads"))?
            .with_timeout(options.timeout)
            .with_metadata(metadata);
        Ok(NativeClient { client })
    }

    /// Calls a unary method.
    pub async fn call(&self, service: &str, method: &str, args: &Value) -> Result<Value, Failure> {
        self.client
            .call(service, method, args)
            .await
            .map_err(|error| match error {
                CallError::Application(error) => Failure::Application(error),
                CallError::Rpc(error) => Failure::Rpc(error),
            })
    }

    /// Calls a server-streaming method.
    pub async fn stream(
        &self,
        service: &str,
        method: &str,
        args: &Value,
    ) -> Result<Items, Failure> {
        let items = self.client.server_stream(service, method, args).await?;
        Ok(items.map(|item| item.map_err(Failure::Rpc)).boxed())
    }

    /// Every service, from the reflection service's `list()`.
    pub async fn list(&self) -> Result<Vec<ServiceInfo>, Failure> {
        let listing = self.call(REFLECTION, "list", &json!({})).await?;
        parse_services(&listing).map_err(|e| Failure::Transport(format!("reflection: {e}")))
    }

    /// One service, from the reflection service's `describe()`.
    pub async fn describe(&self, name: &str) -> Result<Option<ServiceInfo>, Failure> {
        let described = self
            .call(REFLECTION, "describe", &json!({ "service": name }))
            .await?;
        if described.is_null() {
            return Ok(None);
        }
        ServiceInfo::from_json(&described)
            .map(Some)
            .map_err(|e| Failure::Transport(format!("reflection: {e}")))
    }
}
