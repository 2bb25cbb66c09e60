//! A server you can expose: mutual TLS (the server verifies each client's certificate)
//! plus a bearer-token check in an interceptor that sees every call's metadata and the
//! caller's verified certificate names before any handler runs.
//!
//! The certificates (a CA, a server certificate for "localhost", two client certificates)
//! are generated at startup; a real deployment loads them from PEM files with
//! `Identity::from_pem_files` and `TrustRoots::from_pem_file`.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde::{Deserialize, Serialize};
use traitrpc::tls::{self, Identity, TlsClientConfig, TlsServerConfig, TrustRoots};
use traitrpc::{service, CallError, Context, Metadata, Rejection, Router, RpcError};

#[derive(Debug, Serialize, Deserialize)]
pub enum VaultError {
    NotFound,
}

#[service]
pub trait Vault {
    /// Reads a secret; every caller may.
    async fn read(&self, key: String) -> Result<String, VaultError>;
    /// Who the server thinks is calling: the names in the client certificate.
    async fn whoami(&self) -> Vec<String>;
    /// Rotates the secrets; only the "ops" client may.
    async fn rotate(&self) -> u32;
}

struct MyVault;

impl Vault for MyVault {
    async fn read(&self, key: String) -> Result<String, VaultError> {
        match key.as_str() {
            "greeting" => Ok("hello, authenticated world".into()),
            _ => Err(VaultError::NotFound),
        }
    }

    async fn whoami(&self) -> Vec<String> {
        // The verified identity is in every handler's context.
        let ctx = traitrpc::context::current().expect("inside a handler");
        ctx.peer_identity()
            .map(|id| id.names().to_vec())
            .unwrap_or_default()
    }

    async fn rotate(&self) -> u32 {
        42
    }
}

const TOKEN: &str = "s3cret-token";

/// The interceptor: a valid bearer token for every call, and the "ops" certificate for
/// `rotate`. It runs before argument decoding and the handler.
fn authorize(ctx: &Context) -> Result<(), Rejection> {
    match ctx.metadata().get_str("authorization") {
        Some(value) if value.strip_prefix("Bearer ") == Some(TOKEN) => {}
        Some(_) => return Err(Rejection::Unauthenticated("invalid bearer token".into())),
        None => return Err(Rejection::Unauthenticated("missing bearer token".into())),
    }
    let names = ctx.peer_identity().map(|id| id.names()).unwrap_or_default();
    if ctx.method() == "rotate" && !names.iter().any(|n| n == "ops") {
        return Err(Rejection::PermissionDenied(format!(
            "{names:?} may not call rotate"
        )));
    }
    Ok(())
}

/// The demo's certificates: one CA signs the server's and the clients' certificates.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> anyhow::Result<Pki> {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "secure example CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ok(Pki {
            ca: CertifiedIssuer::self_signed(params, KeyPair::generate()?)?,
        })
    }

    fn roots(&self) -> anyhow::Result<TrustRoots> {
        Ok(TrustRoots::from_pem(self.ca.pem().as_bytes())?)
    }

    /// A certificate for `sans`, with `cn` as its common name, and its key.
    fn issue(
        &self,
        cn: &str,
        sans: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> anyhow::Result<Identity> {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca)?;
        Ok(Identity::from_pem(
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
        )?)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let pki = Pki::new()?;

    // Server: mutual TLS, so only clients with a certificate from our CA get in at all,
    // and the interceptor checks the token and the caller's name on every call.
    let server_identity = pki.issue(
        "vault server",
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let router = Router::new()
        .add_service(VaultServer::new(MyVault))?
        .with_interceptor(authorize);
    let server = tls::serve(
        "127.0.0.1:0",
        router,
        TlsServerConfig::mutual(server_identity, pki.roots()?)?,
    )
    .await?;
    println!("serving Vault over mutual TLS on {}", server.local_addr());

    // A client: trusts our CA, presents its own certificate, attaches the token to
    // every call through `with_metadata`.
    let connect_as = |name: &'static str| {
        let roots = pki.roots();
        let identity = pki.issue(name, &[], ExtendedKeyUsagePurpose::ClientAuth);
        let addr = server.local_addr();
        async move {
            let config = TlsClientConfig::mutual(roots?, identity?)?;
            let conn = tls::connect(addr, "localhost", config).await?;
            anyhow::Ok(VaultClient::new(conn))
        }
    };
    let mut bearer = Metadata::new();
    bearer.insert("authorization", format!("Bearer {TOKEN}"))?;

    let app = connect_as("app").await?;
    let authed = app.with_metadata(bearer.clone());
    println!("app: whoami           -> {:?}", authed.whoami().await?);
    println!(
        "app: read(greeting)   -> {:?}",
        authed.read("greeting".into()).await?
    );
    match authed.read("nothing".into()).await {
        Err(CallError::Application(e)) => println!("app: read(nothing)    -> {e:?}"),
        other => anyhow::bail!("unexpected: {other:?}"),
    }
    match app.whoami().await {
        Err(e @ RpcError::Unauthenticated { .. }) => println!("app without token     -> {e}"),
        other => anyhow::bail!("unexpected: {other:?}"),
    }
    match authed.rotate().await {
        Err(e @ RpcError::PermissionDenied { .. }) => println!("app: rotate           -> {e}"),
        other => anyhow::bail!("unexpected: {other:?}"),
    }

    let ops = connect_as("ops").await?.with_metadata(bearer);
    println!("ops: rotate           -> {}", ops.rotate().await?);

    // No client certificate: refused during the TLS handshake, before any call.
    let anonymous = TlsClientConfig::new(pki.roots()?)?;
    match tls::connect(server.local_addr(), "localhost", anonymous).await {
        Err(e) => println!("no client certificate -> {e}"),
        Ok(_) => anyhow::bail!("an anonymous client got in"),
    }
    // A plaintext client: a clear error at connect time.
    match traitrpc::connect(server.local_addr()).await {
        Err(e) => println!("plaintext client      -> {e}"),
        Ok(_) => anyhow::bail!("a plaintext client got in"),
    }

    server.shutdown().await;
    Ok(())
}
