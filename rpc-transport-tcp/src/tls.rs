//! TLS over TCP with [rustls], including mutual TLS: the server verifies client
//! certificates and hands each call the client's identity
//! ([`Context::peer_identity`](traitrpc_core::Context::peer_identity)).
//!
//! ```no_run
//! use traitrpc_transport_tcp::tls::{self, Identity, TlsClientConfig, TlsServerConfig, TrustRoots};
//! # use traitrpc_core::service;
//! # #[service] pub trait Ping { async fn ping(&self) -> String; }
//! # struct P;
//! # impl Ping for P {
//! #     async fn ping(&self) -> String {
//! #         // The client's certificate names, verified by the server.
//! #         let ctx = traitrpc_core::context::current().unwrap();
//! #         ctx.peer_identity().map(|id| id.names().join(",")).unwrap_or_default()
//! #     }
//! # }
//! # #[tokio::main] async fn main() -> anyhow::Result<()> {
//! // Server: its certificate and key, and the CA that signs client certificates.
//! let server_tls = TlsServerConfig::mutual(
//!     Identity::from_pem_files("server.crt", "server.key")?,
//!     TrustRoots::from_pem_file("clients-ca.crt")?,
//! )?;
//! let server = tls::serve("127.0.0.1:7443", PingServer::new(P), server_tls).await?;
//!
//! // Client: the CA that signed the server's certificate, and its own certificate.
//! let client_tls = TlsClientConfig::mutual(
//!     TrustRoots::from_pem_file("server-ca.crt")?,
//!     Identity::from_pem_files("client.crt", "client.key")?,
//! )?;
//! let conn = tls::connect(server.local_addr(), "localhost", client_tls).await?;
//! println!("{}", PingClient::new(conn).ping().await?);
//! # Ok(()) }
//! ```
//!
//! The TLS handshake runs on the connection's own task within the server's handshake
//! timeout ([`ServerConfig::handshake_timeout`]), and on the client within the connect
//! timeout ([`ClientConfig::connect_timeout`]), so a slow or silent peer never holds up
//! anyone else. Protocol versions are TLS 1.3 and 1.2, with rustls's `ring` provider.
//!
//! A plaintext client reaching a TLS port, or a TLS client reaching a plaintext port,
//! fails at connect time, within one round trip, with a typed error that says so
//! ([`RpcError::Protocol`] and [`RpcError::Connect`] respectively).

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use traitrpc_core::protocol::MAGIC;
use traitrpc_core::{
    ClientConfig, Connection, Established, Listener, PeerAddr, PeerIdentity, Router, RpcError,
    Server, ServerConfig, ServerHandle, SplitIo,
};

#[cfg(doc)]
use traitrpc_core::Context;

/// The rustls version this module is built on, for [`TlsServerConfig::from_rustls`] and
/// [`TlsClientConfig::from_rustls`].
pub use tokio_rustls::rustls;

/// The server side of an established TLS connection.
pub type ServerTlsStream = tokio_rustls::server::TlsStream<TcpStream>;
/// The client side of an established TLS connection.
pub type ClientTlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// The cryptography every configuration built here uses (independent of any process-wide
/// default, so an application that also links another provider still works).
///
/// *ring*, not rustls's default aws-lc-rs, so that building needs no CMake or NASM.
/// rustls 0.23.48 deprecates `ring::default_provider` because *ring* has no post-quantum
/// key exchange; that is the known cost of this choice, not an accident. An application
/// that wants post-quantum key exchange builds its own rustls configuration with
/// aws-lc-rs and passes it to [`TlsServerConfig::from_rustls`] /
/// [`TlsClientConfig::from_rustls`].
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why a TLS configuration could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// A PEM file could not be read or parsed.
    Pem {
        /// What was being read: a file path, or "in-memory PEM".
        source_name: String,
        /// What went wrong.
        error: rustls::pki_types::pem::Error,
    },
    /// The input held no certificate.
    NoCertificate {
        /// What was being read.
        source_name: String,
    },
    /// The input held no private key (PKCS#8, PKCS#1 or SEC1).
    NoPrivateKey {
        /// What was being read.
        source_name: String,
    },
    /// A trust root is not a usable CA certificate.
    InvalidRoot(String),
    /// The client-certificate verifier could not be built (for example: no trust roots).
    Verifier(String),
    /// rustls refused the configuration (for example: the key does not match the
    /// certificate, or the key type is unsupported).
    Rustls(rustls::Error),
}

impl fmt::Display for TlsConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsConfigError::Pem { source_name, error } => {
                write!(f, "cannot read PEM from {source_name}: {error}")
            }
            TlsConfigError::NoCertificate { source_name } => {
                write!(f, "no certificate found in {source_name}")
            }
            TlsConfigError::NoPrivateKey { source_name } => {
                write!(f, "no private key found in {source_name}")
            }
            TlsConfigError::InvalidRoot(e) => write!(f, "invalid trust root: {e}"),
            TlsConfigError::Verifier(e) => {
                write!(f, "cannot build the client certificate verifier: {e}")
            }
            TlsConfigError::Rustls(e) => write!(f, "invalid TLS configuration: {e}"),
        }
    }
}

impl std::error::Error for TlsConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsConfigError::Pem { error, .. } => Some(error),
            TlsConfigError::Rustls(e) => Some(e),
            _ => None,
        }
    }
}

impl From<rustls::Error> for TlsConfigError {
    fn from(e: rustls::Error) -> Self {
        TlsConfigError::Rustls(e)
    }
}

const IN_MEMORY: &str = "in-memory PEM";

fn file_name(path: &Path) -> String {
    path.display().to_string()
}

/// Every certificate in a PEM input, in order.
fn certificates_from_pem(
    certs: impl Iterator<Item = Result<CertificateDer<'static>, rustls::pki_types::pem::Error>>,
    source_name: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs = certs
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsConfigError::Pem {
            source_name: source_name.to_string(),
            error,
        })?;
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificate {
            source_name: source_name.to_string(),
        });
    }
    Ok(certs)
}

fn private_key_from_pem(
    key: Result<PrivateKeyDer<'static>, rustls::pki_types::pem::Error>,
    source_name: &str,
) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    key.map_err(|error| match error {
        rustls::pki_types::pem::Error::NoItemsFound => TlsConfigError::NoPrivateKey {
            source_name: source_name.to_string(),
        },
        error => TlsConfigError::Pem {
            source_name: source_name.to_string(),
            error,
        },
    })
}

/// A certificate chain and its private key: what a server presents, or a client presents
/// for mutual TLS.
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("Identity")
            .field("certificates", &self.chain.len())
            .field("names", &self.chain.first().map(|c| certificate_names(c)))
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Reads the certificate chain (end-entity certificate first, then intermediates) and
    /// the private key from PEM files.
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TlsConfigError> {
        let (cert_path, key_path) = (cert_chain.as_ref(), key.as_ref());
        let chain_source = file_name(cert_path);
        let chain_iter =
            CertificateDer::pem_file_iter(cert_path).map_err(|error| TlsConfigError::Pem {
                source_name: chain_source.clone(),
                error,
            })?;
        let chain = certificates_from_pem(chain_iter, &chain_source)?;
        let key =
            private_key_from_pem(PrivateKeyDer::from_pem_file(key_path), &file_name(key_path))?;
        Ok(Identity { chain, key })
    }

    /// Parses the certificate chain and the private key from PEM text in memory.
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> Result<Self, TlsConfigError> {
        let chain = certificates_from_pem(CertificateDer::pem_slice_iter(cert_chain), IN_MEMORY)?;
        let key = private_key_from_pem(PrivateKeyDer::from_pem_slice(key), IN_MEMORY)?;
        Ok(Identity { chain, key })
    }

    /// Takes DER-encoded certificates (end-entity first) and a DER-encoded private key
    /// (PKCS#8, PKCS#1 or SEC1).
    pub fn from_der(cert_chain: Vec<Vec<u8>>, key: Vec<u8>) -> Result<Self, TlsConfigError> {
        if cert_chain.is_empty() {
            return Err(TlsConfigError::NoCertificate {
                source_name: "the DER certificate chain".into(),
            });
        }
        let key = PrivateKeyDer::try_from(key).map_err(|_| TlsConfigError::NoPrivateKey {
            source_name: "the DER private key".into(),
        })?;
        Ok(Identity {
            chain: cert_chain.into_iter().map(CertificateDer::from).collect(),
            key,
        })
    }

    /// The end-entity certificate, DER-encoded.
    pub fn certificate(&self) -> &[u8] {
        &self.chain[0]
    }
}

/// The certificate authorities a side trusts: a client verifies the server's certificate
/// against them, a mutual-TLS server verifies client certificates against them.
#[derive(Debug, Clone)]
pub struct TrustRoots {
    store: RootCertStore,
}

impl Default for TrustRoots {
    fn default() -> Self {
        TrustRoots {
            store: RootCertStore::empty(),
        }
    }
}

impl TrustRoots {
    /// No roots yet; add some with [`add_der`](TrustRoots::add_der).
    pub fn new() -> Self {
        TrustRoots::default()
    }

    /// Every CA certificate in a PEM file.
    pub fn from_pem_file(path: impl AsRef<Path>) -> Result<Self, TlsConfigError> {
        let path = path.as_ref();
        let source_name = file_name(path);
        let iter = CertificateDer::pem_file_iter(path).map_err(|error| TlsConfigError::Pem {
            source_name: source_name.clone(),
            error,
        })?;
        Self::from_certificates(certificates_from_pem(iter, &source_name)?)
    }

    /// Every CA certificate in PEM text.
    pub fn from_pem(pem: &[u8]) -> Result<Self, TlsConfigError> {
        Self::from_certificates(certificates_from_pem(
            CertificateDer::pem_slice_iter(pem),
            IN_MEMORY,
        )?)
    }

    /// DER-encoded CA certificates.
    pub fn from_der<I, C>(certificates: I) -> Result<Self, TlsConfigError>
    where
        I: IntoIterator<Item = C>,
        C: Into<Vec<u8>>,
    {
        let mut roots = TrustRoots::new();
        for cert in certificates {
            roots.add_der(cert)?;
        }
        Ok(roots)
    }

    fn from_certificates(certs: Vec<CertificateDer<'static>>) -> Result<Self, TlsConfigError> {
        let mut roots = TrustRoots::new();
        for cert in certs {
            roots
                .store
                .add(cert)
                .map_err(|e| TlsConfigError::InvalidRoot(e.to_string()))?;
        }
        Ok(roots)
    }

    /// Adds one DER-encoded CA certificate.
    pub fn add_der(&mut self, certificate: impl Into<Vec<u8>>) -> Result<(), TlsConfigError> {
        self.store
            .add(CertificateDer::from(certificate.into()))
            .map_err(|e| TlsConfigError::InvalidRoot(e.to_string()))
    }

    /// How many roots there are.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }
}

/// The application protocols a server offers in ALPN: HTTP/2 (gRPC clients require it)
/// and HTTP/1.1, for a gateway sharing the port. Native clients offer none, and a
/// handshake without ALPN goes on as before.
fn http_alpn() -> Vec<Vec<u8>> {
    vec![b"h2".to_vec(), b"http/1.1".to_vec()]
}

/// A TLS server's settings: its identity and, for mutual TLS, the roots client
/// certificates must chain to. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TlsServerConfig {
    inner: Arc<rustls::ServerConfig>,
}

impl TlsServerConfig {
    /// A server presenting `identity` that asks clients for no certificate.
    pub fn new(identity: Identity) -> Result<Self, TlsConfigError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(identity.chain, identity.key)?;
        config.alpn_protocols = http_alpn();
        Ok(TlsServerConfig::from_rustls(Arc::new(config)))
    }

    /// Mutual TLS: a server presenting `identity` that requires every client to present a
    /// certificate chaining to `client_roots`. Connections without one fail during the
    /// TLS handshake and never reach a handler; handlers and interceptors read the verified
    /// identity with [`Context::peer_identity`].
    pub fn mutual(identity: Identity, client_roots: TrustRoots) -> Result<Self, TlsConfigError> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(client_roots.store), provider())
                .build()
                .map_err(|e| TlsConfigError::Verifier(e.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(identity.chain, identity.key)?;
        config.alpn_protocols = http_alpn();
        Ok(TlsServerConfig::from_rustls(Arc::new(config)))
    }

    /// Any rustls server configuration (custom verifiers, session caches, ALPN, ...).
    /// The client certificate it verifies, if any, becomes the peer identity.
    pub fn from_rustls(config: Arc<rustls::ServerConfig>) -> Self {
        TlsServerConfig { inner: config }
    }

    /// The underlying rustls configuration.
    pub fn rustls_config(&self) -> &Arc<rustls::ServerConfig> {
        &self.inner
    }
}

/// A TLS client's settings: the roots the server's certificate must chain to and, for
/// mutual TLS, the client's own identity. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TlsClientConfig {
    inner: Arc<rustls::ClientConfig>,
}

impl TlsClientConfig {
    /// A client that trusts servers whose certificates chain to `roots` and presents no
    /// certificate itself.
    pub fn new(roots: TrustRoots) -> Result<Self, TlsConfigError> {
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots.store)
            .with_no_client_auth();
        Ok(TlsClientConfig::from_rustls(Arc::new(config)))
    }

    /// Mutual TLS: a client that trusts `roots` and presents `identity` to the server.
    pub fn mutual(roots: TrustRoots, identity: Identity) -> Result<Self, TlsConfigError> {
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots.store)
            .with_client_auth_cert(identity.chain, identity.key)?;
        Ok(TlsClientConfig::from_rustls(Arc::new(config)))
    }

    /// Any rustls client configuration.
    pub fn from_rustls(config: Arc<rustls::ClientConfig>) -> Self {
        TlsClientConfig { inner: config }
    }

    /// The underlying rustls configuration.
    pub fn rustls_config(&self) -> &Arc<rustls::ClientConfig> {
        &self.inner
    }
}

/// The names a DER-encoded certificate certifies, as [`PeerIdentity::names`] reports
/// them: its subject alternative names (DNS names, IP addresses, e-mail addresses and
/// URIs, in certificate order), then its subject common names, without duplicates. An
/// unparseable certificate has no names.
pub fn certificate_names(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = Vec::new();
    let mut push = |name: String| {
        if !names.contains(&name) {
            names.push(name);
        }
    };
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for general in &san.value.general_names {
            match general {
                GeneralName::DNSName(name)
                | GeneralName::RFC822Name(name)
                | GeneralName::URI(name) => push(name.to_string()),
                GeneralName::IPAddress(bytes) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                        push(std::net::Ipv4Addr::from(v4).to_string());
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                        push(std::net::Ipv6Addr::from(v6).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    for cn in cert.subject().iter_common_name() {
        if let Ok(cn) = cn.as_str() {
            push(cn.to_string());
        }
    }
    names
}

/// A TCP listener that runs a TLS handshake on every connection, for
/// [`Server::serve`](traitrpc_core::Server::serve).
///
/// [`accept`](Listener::accept) only takes the TCP connection; the TLS handshake runs in
/// [`establish`](Listener::establish), on the connection's own task and within the
/// server's handshake timeout.
pub struct TlsListener {
    inner: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
}

impl fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsListener")
            .field("local_addr", &self.inner.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Binds `addr`.
    pub async fn bind(addr: impl ToSocketAddrs, config: TlsServerConfig) -> io::Result<Self> {
        Ok(TlsListener::from_tokio(
            tokio::net::TcpListener::bind(addr).await?,
            config,
        ))
    }

    /// Wraps a bound tokio listener.
    pub fn from_tokio(inner: tokio::net::TcpListener, config: TlsServerConfig) -> Self {
        TlsListener {
            inner,
            acceptor: TlsAcceptor::from(config.inner),
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl Listener for TlsListener {
    type Accepted = TcpStream;
    type Io = SplitIo<ServerTlsStream>;

    async fn accept(&mut self) -> io::Result<(TcpStream, PeerAddr)> {
        let (stream, peer) = self.inner.accept().await?;
        // As for plain TCP: a peer that reset at once is its connection's problem.
        if let Err(e) = crate::configure(&stream) {
            tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY or keepalive");
        }
        Ok((stream, PeerAddr::Tcp(peer)))
    }

    fn establish(
        &self,
        stream: TcpStream,
    ) -> impl Future<Output = io::Result<Established<Self::Io>>> + Send + 'static {
        let acceptor = self.acceptor.clone();
        async move {
            // Name the common mistake in the server's log: a plaintext client of this
            // protocol. (rustls answers it with a TLS alert, which the client reports.)
            let mut first = [0u8; 4];
            let plaintext = matches!(stream.peek(&mut first).await, Ok(4) if first == MAGIC);
            let tls = acceptor.accept(stream).await.map_err(|e| {
                if plaintext {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a plaintext client connected to this TLS port",
                    )
                } else {
                    e
                }
            })?;
            let identity = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|cert| PeerIdentity::new(cert.to_vec(), certificate_names(cert)));
            Ok(Established {
                io: SplitIo(tls),
                identity,
            })
        }
    }
}

/// Binds `addr` and serves `services` over TLS with default server settings.
pub async fn serve(
    addr: impl ToSocketAddrs,
    services: impl Into<Router>,
    tls: TlsServerConfig,
) -> io::Result<ServerHandle<SocketAddr>> {
    serve_with_config(addr, services, tls, ServerConfig::default()).await
}

/// [`serve`] with explicit server settings.
pub async fn serve_with_config(
    addr: impl ToSocketAddrs,
    services: impl Into<Router>,
    tls: TlsServerConfig,
    config: ServerConfig,
) -> io::Result<ServerHandle<SocketAddr>> {
    let listener = TlsListener::bind(addr, tls).await?;
    let local_addr = listener.local_addr()?;
    Ok(Server::with_config(services, config).serve(listener, local_addr))
}

/// Connects to a TLS server at `addr` with default client settings, verifying that its
/// certificate is valid for `server_name` (a DNS name or an IP address).
pub async fn connect(
    addr: impl ToSocketAddrs,
    server_name: &str,
    tls: TlsClientConfig,
) -> Result<Connection, RpcError> {
    connect_with_config(addr, server_name, tls, ClientConfig::default()).await
}

/// [`connect`] with explicit client settings. Resolving, the TCP connection, the TLS
/// handshake and the protocol handshake all share the connect timeout.
pub async fn connect_with_config(
    addr: impl ToSocketAddrs,
    server_name: &str,
    tls: TlsClientConfig,
    config: ClientConfig,
) -> Result<Connection, RpcError> {
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| {
        crate::connect_error(
            server_name,
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{server_name}` is not a valid server name: {e}"),
            ),
        )
    })?;
    let connector = TlsConnector::from(tls.inner);
    let timeout = config.connect_timeout_value();
    let addrs: Vec<std::net::SocketAddr> =
        match tokio::time::timeout(timeout, tokio::net::lookup_host(addr)).await {
            Ok(Ok(addrs)) => addrs.collect(),
            Ok(Err(e)) => return Err(crate::connect_error("(unresolved)", e)),
            Err(_) => {
                return Err(crate::connect_error(
                    "(unresolved)",
                    io::Error::new(io::ErrorKind::TimedOut, "resolving timed out"),
                ))
            }
        };
    let attempt = traitrpc_core::client::with_version_fallback(config, |config| {
        let (name, connector, addrs) = (name.clone(), connector.clone(), &addrs);
        async move {
            let (stream, addr) = crate::connect_tcp(&addrs[..]).await?;
            let tls = connector
                .connect(name, stream)
                .await
                .map_err(|e| crate::connect_error(addr, explain_client_error(e)))?;
            Connection::handshake(SplitIo(tls), &addr.to_string(), config)
                .await
                .map_err(explain_refusal)
        }
    });
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(crate::connect_error(
                "(timed out)",
                io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
            ))
        })
}

/// With TLS 1.3 a server rejects a client certificate only after the client considers
/// the TLS handshake done, so the rejection surfaces in the protocol handshake: name it.
fn explain_refusal(error: RpcError) -> RpcError {
    let RpcError::Connect { addr, source } = &error else {
        return error;
    };
    let alert = match source
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::AlertReceived(alert)) => *alert,
        _ => return error,
    };
    use rustls::AlertDescription as A;
    let hint = match alert {
        A::CertificateRequired => "the server requires a client certificate",
        A::UnknownCA
        | A::BadCertificate
        | A::UnsupportedCertificate
        | A::CertificateRevoked
        | A::CertificateExpired
        | A::CertificateUnknown
        | A::AccessDenied => "the server refused this client's certificate",
        _ => "the server ended the TLS session",
    };
    crate::connect_error(
        addr,
        io::Error::new(source.kind(), format!("{hint} ({alert:?} alert)")),
    )
}

/// Says what a failed client-side TLS handshake most likely means.
fn explain_client_error(error: io::Error) -> io::Error {
    let kind = error.kind();
    let rustls_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let hint = match (kind, rustls_error) {
        // The server hung up on a ClientHello: what a plaintext server of this protocol
        // does with bytes that are not its handshake.
        (
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe,
            _,
        ) => {
            "the server closed the connection during the TLS handshake \
              (is it serving plaintext, not TLS?)"
        }
        // The server answered with something that is not TLS.
        (_, Some(rustls::Error::InvalidMessage(_))) => {
            "the server did not answer with TLS (is it serving plaintext?)"
        }
        (_, Some(rustls::Error::InvalidCertificate(certificate))) => certificate_hint(certificate),
        _ => "TLS handshake failed",
    };
    io::Error::new(kind, format!("{hint}: {error}"))
}

/// What to do about a server certificate the client refused, for the errors a user meets
/// first (docs/SECURITY.md, "Certificates", explains each).
fn certificate_hint(error: &rustls::CertificateError) -> &'static str {
    use rustls::CertificateError as C;
    match error {
        C::UnknownIssuer => {
            "the server's certificate is not signed by any of the trusted roots: give \
             TrustRoots the CA that signed it (for a self-signed certificate, the \
             certificate itself)"
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "the server's certificate is not valid for the name connected to: connect \
             with a name from its subjectAltName, or issue one for this name"
        }
        C::Expired | C::ExpiredContext { .. } => "the server's certificate has expired",
        C::NotValidYet | C::NotValidYetContext { .. } => {
            "the server's certificate is not valid yet (check the clocks)"
        }
        C::Other(other) if is_ca_used_as_end_entity(other) => {
            "the server presents a CA certificate (basicConstraints CA:TRUE) as its own, \
             which TLS refuses: give the server a certificate with CA:FALSE, signed by \
             that CA or self-signed (`openssl req -x509` makes CA:TRUE unless told \
             `-addext basicConstraints=critical,CA:FALSE`; docs/SECURITY.md has the recipe)"
        }
        _ => "the server's certificate was rejected",
    }
}

/// Whether webpki refused a certificate because it is a CA's (what the plain
/// `openssl req -x509` makes) used as a server's own.
fn is_ca_used_as_end_entity(error: &rustls::OtherError) -> bool {
    matches!(
        error.0.downcast_ref::<webpki::Error>(),
        Some(webpki::Error::CaUsedAsEndEntity)
    )
}
