//! An asynchronous authentication check as server middleware: before any call of the
//! `Vault` service runs (before its arguments are even decoded), the `RequireToken`
//! layer asks another service, `Tokens`, whether the caller's bearer token is valid, and
//! refuses the call with UNAUTHENTICATED or PERMISSION_DENIED if not.
//!
//! ```text
//! cargo run --example auth
//! ```

use std::sync::Arc;

use traitrpc::server::middleware::MiddlewareFuture;
use traitrpc::{
    service, CallError, Client, Metadata, Middleware, Next, Rejection, Router, RpcError,
};

#[service]
pub trait Tokens {
    /// Who `token` belongs to, and whether they may read secrets; `None` if unknown.
    #[idempotent]
    async fn verify(&self, token: String) -> Option<(String, bool)>;
}

#[service]
pub trait Vault {
    /// The secret named `name`.
    async fn secret(&self, name: String) -> Result<String, String>;
}

/// The token service (in a real deployment, another process).
struct TokenStore;
impl Tokens for TokenStore {
    async fn verify(&self, token: String) -> Option<(String, bool)> {
        match token.as_str() {
            "alice-token" => Some(("alice".into(), true)),
            "bob-token" => Some(("bob".into(), false)),
            _ => None,
        }
    }
}

struct Secrets;
impl Vault for Secrets {
    async fn secret(&self, name: String) -> Result<String, String> {
        match name.as_str() {
            "launch-code" => Ok("0000".into()),
            _ => Err(format!("no secret named {name}")),
        }
    }
}

/// The middleware: an async check, with a client of the token service.
struct RequireToken {
    tokens: Arc<TokensClient>,
}

impl Middleware for RequireToken {
    fn call(&self, next: Next) -> MiddlewareFuture {
        let tokens = Arc::clone(&self.tokens);
        MiddlewareFuture::new(async move {
            let token = next
                .context()
                .metadata()
                .get_str("authorization")
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_string)
                .ok_or_else(|| Rejection::Unauthenticated("missing bearer token".into()))?;
            // The asynchronous part: a call to another service, within this call's
            // deadline (calls made here inherit it).
            let verdict = tokens.verify(token).await.map_err(|e| {
                Rejection::status(
                    traitrpc::protocol::status::INTERNAL,
                    format!("could not verify the token: {e}"),
                )
            })?;
            match verdict {
                None => Err(Rejection::Unauthenticated("unknown token".into())),
                Some((user, false)) => Err(Rejection::PermissionDenied(format!(
                    "{user} may not read secrets"
                ))),
                Some((_user, true)) => next.run().await,
            }
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let tokens_server = traitrpc::serve("127.0.0.1:0", TokensServer::new(TokenStore)).await?;
    let tokens = TokensClient::new(traitrpc::connect(tokens_server.local_addr()).await?);

    let vault = Router::from(VaultServer::new(Secrets)).layer(RequireToken {
        tokens: Arc::new(tokens),
    });
    let server = traitrpc::serve("127.0.0.1:0", vault).await?;
    let connection = traitrpc::connect(server.local_addr()).await?;

    for token in [
        None,
        Some("mallory-token"),
        Some("bob-token"),
        Some("alice-token"),
    ] {
        let mut metadata = Metadata::new();
        if let Some(token) = token {
            metadata.insert("authorization", format!("Bearer {token}"))?;
        }
        let vault =
            VaultClient::from_client(Client::new(connection.clone()).with_metadata(metadata));
        let answer = match vault.secret("launch-code".into()).await {
            Ok(secret) => format!("the secret is {secret}"),
            Err(CallError::Rpc(RpcError::Unauthenticated { message })) => {
                format!("UNAUTHENTICATED: {message}")
            }
            Err(CallError::Rpc(RpcError::PermissionDenied { message })) => {
                format!("PERMISSION_DENIED: {message}")
            }
            Err(other) => format!("failed: {other}"),
        };
        println!("{:<14} -> {answer}", token.unwrap_or("(no token)"));
    }

    server.shutdown().await;
    tokens_server.shutdown().await;
    Ok(())
}
