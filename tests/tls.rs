//! TLS and mutual TLS over TCP (`traitrpc_transport_tcp::tls`), with certificates generated
//! at test time: round trips, the client identity seen by handlers and interceptors,
//! refused certificates, and plaintext/TLS mismatches failing fast with typed errors.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use traitrpc_core::{service, ClientConfig, Context, Rejection, Router, RpcError, ServerConfig};
use traitrpc_transport_tcp::tls::{
    self, Identity, TlsClientConfig, TlsConfigError, TlsServerConfig, TrustRoots,
};

/// What a handler saw of its caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Caller {
    pub names: Option<Vec<String>>,
    pub certificate: Option<Vec<u8>>,
}

#[service]
pub trait Secure {
    async fn echo(&self, value: u64) -> u64;
    async fn blob(&self, data: Vec<u8>) -> Vec<u8>;
    /// The caller's verified identity, from the handler's context.
    async fn caller(&self) -> Caller;
}

struct SecureImpl;

impl Secure for SecureImpl {
    async fn echo(&self, value: u64) -> u64 {
        value
    }

    async fn blob(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }

    async fn caller(&self) -> Caller {
        let ctx = traitrpc_core::context::current().expect("handlers run in their context");
        Caller {
            names: ctx.peer_identity().map(|id| id.names().to_vec()),
            certificate: ctx.peer_identity().map(|id| id.certificate().to_vec()),
        }
    }
}

/// A certificate authority made for one test.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Leaf {
    fn identity(&self) -> Identity {
        Identity::from_pem(self.cert_pem.as_bytes(), self.key_pem.as_bytes()).unwrap()
    }
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    fn roots(&self) -> TrustRoots {
        TrustRoots::from_pem(self.issuer.pem().as_bytes()).unwrap()
    }

    fn leaf(&self, common_name: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A server certificate for "localhost" and 127.0.0.1.
    fn server(&self) -> Leaf {
        self.leaf(
            "test server",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    fn client(&self, common_name: &str, sans: &[&str]) -> Leaf {
        self.leaf(common_name, sans, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

async fn serve_tls(
    services: impl Into<Router>,
    config: TlsServerConfig,
) -> traitrpc_core::ServerHandle<std::net::SocketAddr> {
    tls::serve("127.0.0.1:0", services, config).await.unwrap()
}

#[tokio::test]
async fn calls_round_trip_over_tls() {
    let ca = Ca::new("round trip CA");
    let server = serve_tls(
        SecureServer::new(SecureImpl),
        TlsServerConfig::new(ca.server().identity()).unwrap(),
    )
    .await;
    let client_tls = TlsClientConfig::new(ca.roots()).unwrap();
    for name in ["localhost", "127.0.0.1"] {
        let conn = tls::connect(server.local_addr(), name, client_tls.clone())
            .await
            .unwrap();
        let client = SecureClient::new(conn);
        assert_eq!(client.echo(7).await.unwrap(), 7);
        // No client certificate: no identity.
        assert_eq!(
            client.caller().await.unwrap(),
            Caller {
                names: None,
                certificate: None
            }
        );
        // Many calls in flight at once, and payloads spanning many TLS records.
        let calls = (0..64u64).map(|i| {
            let client = client.clone();
            async move { client.echo(i).await.unwrap() }
        });
        let results = futures::future::join_all(calls).await;
        assert_eq!(results, (0..64).collect::<Vec<_>>());
        let big: Vec<u8> = (0..2_000_000u32).map(|i| i as u8).collect();
        assert_eq!(client.blob(big.clone()).await.unwrap(), big);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn mutual_tls_exposes_the_client_identity_to_handlers_and_interceptors() {
    let ca = Ca::new("mtls CA");
    let seen_by_interceptor = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&seen_by_interceptor);
    let router = Router::new()
        .add_service(SecureServer::new(SecureImpl))
        .unwrap()
        .with_interceptor(move |ctx: &Context| -> Result<(), Rejection> {
            let Some(identity) = ctx.peer_identity() else {
                return Err(Rejection::Unauthenticated("no client certificate".into()));
            };
            seen.lock().unwrap().push(identity.names().to_vec());
            if identity.names().iter().any(|n| n == "alice") {
                Ok(())
            } else {
                Err(Rejection::PermissionDenied(format!(
                    "{:?} may not call {}",
                    identity.names(),
                    ctx.method()
                )))
            }
        });
    let server = serve_tls(
        router,
        TlsServerConfig::mutual(ca.server().identity(), ca.roots()).unwrap(),
    )
    .await;

    let alice = ca.client("alice", &["alice.example.com", "10.1.2.3"]);
    let conn = tls::connect(
        server.local_addr(),
        "localhost",
        TlsClientConfig::mutual(ca.roots(), alice.identity()).unwrap(),
    )
    .await
    .unwrap();
    let client = SecureClient::new(conn);
    let caller = client.caller().await.unwrap();
    let expected_names = vec![
        "alice.example.com".to_string(),
        "10.1.2.3".to_string(),
        "alice".to_string(),
    ];
    assert_eq!(caller.names.as_ref(), Some(&expected_names));
    assert_eq!(caller.certificate.as_deref(), Some(&alice.der[..]));
    assert_eq!(seen_by_interceptor.lock().unwrap()[0], expected_names);

    // A client with a valid certificate, but a name the interceptor refuses.
    let mallory = ca.client("mallory", &[]);
    let conn = tls::connect(
        server.local_addr(),
        "localhost",
        TlsClientConfig::mutual(ca.roots(), mallory.identity()).unwrap(),
    )
    .await
    .unwrap();
    let error = SecureClient::new(conn).echo(1).await.unwrap_err();
    assert!(
        matches!(&error, RpcError::PermissionDenied { message } if message.contains("mallory")),
        "{error:?}"
    );
    // Alice's connection is unaffected.
    assert_eq!(client.echo(2).await.unwrap(), 2);
    server.shutdown().await;
}

/// Asserts a connect attempt failed at once with a `Connect` error mentioning `needle`.
fn assert_refused(
    outcome: Result<traitrpc_core::Connection, RpcError>,
    started: Instant,
    needle: &str,
) {
    let elapsed = started.elapsed();
    let error = outcome.expect_err("the connection must be refused");
    eprintln!("refused as expected after {elapsed:?}: {error}");
    assert!(
        matches!(&error, RpcError::Connect { .. }),
        "expected a Connect error, got {error:?}"
    );
    assert!(
        error.to_string().to_lowercase().contains(needle),
        "`{error}` should mention `{needle}`"
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "refused after {elapsed:?}"
    );
}

#[tokio::test]
async fn a_mutual_tls_server_refuses_clients_without_a_trusted_certificate() {
    let ca = Ca::new("mtls CA");
    let probe_impl = Counting::default();
    let started_calls = Arc::clone(&probe_impl.0);
    let server = serve_tls(
        SecureServer::new(probe_impl),
        TlsServerConfig::mutual(ca.server().identity(), ca.roots()).unwrap(),
    )
    .await;

    // No certificate at all.
    let started = Instant::now();
    let outcome = tls::connect(
        server.local_addr(),
        "localhost",
        TlsClientConfig::new(ca.roots()).unwrap(),
    )
    .await;
    assert_refused(outcome, started, "certificate");

    // A certificate from a CA the server does not trust.
    let other = Ca::new("someone else's CA");
    let stranger = other.client("alice", &[]);
    let started = Instant::now();
    let outcome = tls::connect(
        server.local_addr(),
        "localhost",
        TlsClientConfig::mutual(ca.roots(), stranger.identity()).unwrap(),
    )
    .await;
    assert_refused(outcome, started, "certificate");
    assert_eq!(started_calls.load(Ordering::SeqCst), 0);

    // The server keeps serving trusted clients.
    let alice = ca.client("alice", &[]);
    let conn = tls::connect(
        server.local_addr(),
        "localhost",
        TlsClientConfig::mutual(ca.roots(), alice.identity()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(SecureClient::new(conn).echo(3).await.unwrap(), 3);
    server.shutdown().await;
}

/// Counts the calls that reached a handler.
#[derive(Default, Clone)]
struct Counting(Arc<AtomicUsize>);

impl Secure for Counting {
    async fn echo(&self, value: u64) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst);
        value
    }
    async fn blob(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }
    async fn caller(&self) -> Caller {
        SecureImpl.caller().await
    }
}

#[tokio::test]
async fn a_client_refuses_an_untrusted_or_misnamed_server_certificate() {
    let ca = Ca::new("real CA");
    let server = serve_tls(
        SecureServer::new(SecureImpl),
        TlsServerConfig::new(ca.server().identity()).unwrap(),
    )
    .await;

    // The client trusts a different CA.
    let other = Ca::new("other CA");
    let started = Instant::now();
    let outcome = tls::connect(
        server.local_addr(),
        "localhost",
        TlsClientConfig::new(other.roots()).unwrap(),
    )
    .await;
    assert_refused(outcome, started, "unknownissuer");

    // The right CA, but the certificate is not for this name.
    let started = Instant::now();
    let outcome = tls::connect(
        server.local_addr(),
        "db.example.com",
        TlsClientConfig::new(ca.roots()).unwrap(),
    )
    .await;
    assert_refused(outcome, started, "certificate");

    // Not a server name at all.
    let outcome = tls::connect(
        server.local_addr(),
        "not a name!",
        TlsClientConfig::new(ca.roots()).unwrap(),
    )
    .await;
    assert_refused(outcome, Instant::now(), "not a valid server name");
    server.shutdown().await;
}

#[tokio::test]
async fn a_plaintext_client_of_a_tls_server_fails_fast_with_a_typed_error() {
    let ca = Ca::new("CA");
    let server = serve_tls(
        SecureServer::new(SecureImpl),
        TlsServerConfig::new(ca.server().identity()).unwrap(),
    )
    .await;
    let started = Instant::now();
    let error = traitrpc_transport_tcp::connect(server.local_addr())
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    eprintln!("refused as expected after {elapsed:?}: {error}");
    assert!(
        matches!(&error, RpcError::Protocol(message) if message.contains("requires a TLS connection")),
        "{error:?}"
    );
    assert!(elapsed < Duration::from_secs(2), "failed after {elapsed:?}");
    // TLS clients are still served.
    let conn = tls::connect(
        server.local_addr(),
        "localhost",
        TlsClientConfig::new(ca.roots()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(SecureClient::new(conn).echo(4).await.unwrap(), 4);
    server.shutdown().await;
}

#[tokio::test]
async fn a_tls_client_of_a_plaintext_server_fails_fast_with_a_typed_error() {
    let ca = Ca::new("CA");
    let server = traitrpc_transport_tcp::serve("127.0.0.1:0", SecureServer::new(SecureImpl))
        .await
        .unwrap();
    let started = Instant::now();
    let outcome = tls::connect(
        server.local_addr(),
        "localhost",
        TlsClientConfig::new(ca.roots()).unwrap(),
    )
    .await;
    assert_refused(outcome, started, "plaintext");
    // Plaintext clients are still served.
    let conn = traitrpc_transport_tcp::connect(server.local_addr())
        .await
        .unwrap();
    assert_eq!(SecureClient::new(conn).echo(5).await.unwrap(), 5);
    server.shutdown().await;
}

#[tokio::test]
async fn the_tls_handshake_is_bounded_by_the_handshake_timeout_and_blocks_no_one() {
    let ca = Ca::new("CA");
    let server = tls::serve_with_config(
        "127.0.0.1:0",
        SecureServer::new(SecureImpl),
        TlsServerConfig::new(ca.server().identity()).unwrap(),
        ServerConfig::default().handshake_timeout(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    // A peer that opens TCP connections and never starts TLS (or stops half-way).
    let mut silent = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    let mut partial = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    partial.write_all(&[0x16, 0x03, 0x01, 0x02]).await.unwrap();
    // Meanwhile, others connect and call normally.
    let client_tls = TlsClientConfig::new(ca.roots()).unwrap();
    let started = Instant::now();
    let conn = tls::connect(server.local_addr(), "localhost", client_tls)
        .await
        .unwrap();
    assert_eq!(SecureClient::new(conn).echo(6).await.unwrap(), 6);
    assert!(started.elapsed() < Duration::from_millis(300));
    // The stalled ones are closed once the handshake timeout passes.
    for stream in [&mut silent, &mut partial] {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("closed by the server");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn the_connect_timeout_bounds_the_tls_handshake() {
    // A TCP server that accepts and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(stream);
    });
    let ca = Ca::new("CA");
    let started = Instant::now();
    let error = tls::connect_with_config(
        addr,
        "localhost",
        TlsClientConfig::new(ca.roots()).unwrap(),
        ClientConfig::default().connect_timeout(Duration::from_millis(300)),
    )
    .await
    .unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(&error, RpcError::Connect { source, .. } if source.kind() == std::io::ErrorKind::TimedOut),
        "{error:?}"
    );
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    holder.abort();
}

#[tokio::test]
async fn identities_load_from_pem_files_and_bad_input_is_a_typed_error() {
    let ca = Ca::new("files CA");
    let leaf = ca.server();
    let dir = std::env::temp_dir().join(format!("rpc-tls-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key, roots) = (
        dir.join("server.crt"),
        dir.join("server.key"),
        dir.join("ca.crt"),
    );
    std::fs::write(&cert, &leaf.cert_pem).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    std::fs::write(&roots, ca.issuer.pem()).unwrap();

    let server = serve_tls(
        SecureServer::new(SecureImpl),
        TlsServerConfig::new(Identity::from_pem_files(&cert, &key).unwrap()).unwrap(),
    )
    .await;
    let conn = tls::connect(
        server.local_addr(),
        "localhost",
        TlsClientConfig::new(TrustRoots::from_pem_file(&roots).unwrap()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(SecureClient::new(conn).echo(8).await.unwrap(), 8);
    server.shutdown().await;

    // Missing file, a key where a certificate should be, and the reverse.
    assert!(matches!(
        Identity::from_pem_files(dir.join("missing.crt"), &key),
        Err(TlsConfigError::Pem { .. })
    ));
    assert!(matches!(
        Identity::from_pem_files(&key, &key),
        Err(TlsConfigError::NoCertificate { .. })
    ));
    assert!(matches!(
        Identity::from_pem_files(&cert, &cert),
        Err(TlsConfigError::NoPrivateKey { .. })
    ));
    assert!(matches!(
        TrustRoots::from_pem(b"not pem at all"),
        Err(TlsConfigError::NoCertificate { .. })
    ));
    // A key that does not belong to the certificate.
    let other_key = ca.server().key_pem;
    let mismatched = Identity::from_pem(leaf.cert_pem.as_bytes(), other_key.as_bytes()).unwrap();
    assert!(matches!(
        TlsServerConfig::new(mismatched),
        Err(TlsConfigError::Rustls(_))
    ));
    // Mutual TLS without any root to verify clients against.
    assert!(matches!(
        TlsServerConfig::mutual(leaf.identity(), TrustRoots::new()),
        Err(TlsConfigError::Verifier(_))
    ));
    // DER works too.
    let from_der =
        Identity::from_der(vec![leaf.der.clone()], rustls_key_der(&leaf.key_pem)).unwrap();
    assert_eq!(from_der.certificate(), &leaf.der[..]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The DER bytes of a PEM private key.
fn rustls_key_der(pem: &str) -> Vec<u8> {
    KeyPair::from_pem(pem).unwrap().serialize_der()
}

#[test]
fn certificate_names_lists_sans_then_the_common_name_without_duplicates() {
    let ca = Ca::new("names CA");
    let mut params = CertificateParams::new(vec![
        "svc.example.com".to_string(),
        "::1".to_string(),
        "svc".to_string(),
    ])
    .unwrap();
    params
        .subject_alt_names
        .push(SanType::Rfc822Name("ops@example.com".try_into().unwrap()));
    params
        .subject_alt_names
        .push(SanType::URI("spiffe://example.com/svc".try_into().unwrap()));
    params.distinguished_name.push(DnType::CommonName, "svc");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    assert_eq!(
        tls::certificate_names(cert.der()),
        vec![
            "svc.example.com",
            "::1",
            "svc",
            "ops@example.com",
            "spiffe://example.com/svc"
        ]
    );
    assert!(tls::certificate_names(b"garbage").is_empty());
}

#[tokio::test]
async fn a_balanced_channel_reaches_replicas_over_mutual_tls() {
    use traitrpc_discovery::{
        BalancedChannel, Endpoint, StaticDiscovery, TlsConnector, TLS_SERVER_NAME,
    };
    let ca = Ca::new("balanced CA");
    let server_config = || TlsServerConfig::mutual(ca.server().identity(), ca.roots()).unwrap();
    let a = serve_tls(SecureServer::new(SecureImpl), server_config()).await;
    let b = serve_tls(SecureServer::new(SecureImpl), server_config()).await;
    let client_tls = TlsClientConfig::mutual(
        ca.roots(),
        ca.client("balancer", &["balancer.example.com"]).identity(),
    )
    .unwrap();
    // One endpoint names its certificate's host in metadata; the other by its address.
    let discovery = StaticDiscovery::new([
        Endpoint::new(a.local_addr().to_string()).with_metadata(TLS_SERVER_NAME, "localhost"),
        Endpoint::new(b.local_addr().to_string()),
    ]);
    let channel = BalancedChannel::builder(discovery)
        .connector(TlsConnector::new(client_tls))
        .build();
    let client = SecureClient::new(channel.clone());
    for i in 0..20 {
        assert_eq!(client.echo(i).await.unwrap(), i);
    }
    let caller = client.caller().await.unwrap();
    assert!(caller
        .names
        .unwrap()
        .contains(&"balancer.example.com".to_string()));
    assert!(channel.endpoints().iter().all(|e| e.connected));
    // Without a client certificate, the servers refuse: no endpoint is reachable.
    let anonymous = BalancedChannel::builder(StaticDiscovery::new([a.local_addr()]))
        .connector(TlsConnector::new(TlsClientConfig::new(ca.roots()).unwrap()))
        .build();
    let error = SecureClient::new(anonymous).echo(1).await.unwrap_err();
    assert!(error.outcome().never_ran(), "{error:?}");
    a.shutdown().await;
    b.shutdown().await;
}
