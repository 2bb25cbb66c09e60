//! The README's and docs/SECURITY.md's TLS recipes, run as written: its `openssl` command makes a certificate, a
//! server presents it and a client that trusts it calls. And the certificate a newcomer
//! makes first (the plain `openssl req -x509`, a CA certificate) fails with an error that
//! says what is wrong and what to do. Needs the `openssl` command (`.ci/tools.sh`).

use std::path::{Path, PathBuf};
use std::process::Command;

use traitrpc_core::{service, RpcError};
use traitrpc_transport_tcp::tls::{self, Identity, TlsClientConfig, TlsServerConfig, TrustRoots};

#[service]
pub trait Adder {
    async fn add(&self, a: i64, b: i64) -> i64;
}

struct AdderImpl;

impl Adder for AdderImpl {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
}

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("traitrpc-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The commands of the first ```sh block of `doc` that starts with `openssl req` after
/// the text `after`.
fn documented_commands(doc: &str, after: &str) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(doc))
        .unwrap_or_else(|e| panic!("{doc}: {e}"));
    let from = text
        .find(after)
        .unwrap_or_else(|| panic!("{doc} says `{after}`"));
    let fence = "```sh\nopenssl req";
    let start = from
        + text[from..]
            .find(fence)
            .unwrap_or_else(|| panic!("{doc} shows openssl commands after `{after}`"))
        + "```sh\n".len();
    let end = start + text[start..].find("```").expect("the block ends");
    text[start..end].trim().to_string()
}

/// Runs a shell command in `dir`; panics with its output if it fails.
fn sh(dir: &Path, command: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .output()
        .expect("sh runs (and openssl is installed: .ci/tools.sh)");
    assert!(
        out.status.success(),
        "`{command}` failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Serves the adder with `server.crt`/`server.key` from `dir` and connects to it as
/// "localhost", trusting the certificates in `dir/trusted`.
async fn serve_and_call(dir: &Path, trusted: &str) -> Result<i64, RpcError> {
    let identity = Identity::from_pem_files(dir.join("server.crt"), dir.join("server.key"))
        .expect("the key and certificate load");
    let server = tls::serve(
        "127.0.0.1:0",
        AdderServer::new(AdderImpl),
        TlsServerConfig::new(identity).unwrap(),
    )
    .await
    .unwrap();
    let roots = TrustRoots::from_pem_file(dir.join(trusted)).unwrap();
    let outcome = match tls::connect(
        server.local_addr(),
        "localhost",
        TlsClientConfig::new(roots).unwrap(),
    )
    .await
    {
        Ok(connection) => AdderClient::new(connection).add(1, 2).await,
        Err(error) => Err(error),
    };
    server.shutdown().await;
    outcome
}

#[tokio::test]
async fn the_readme_certificate_recipe_serves_and_connects() {
    let dir = scratch("readme-recipe");
    sh(
        &dir,
        &documented_commands("README.md", "A certificate for development"),
    );
    assert_eq!(serve_and_call(&dir, "server.crt").await.unwrap(), 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_security_docs_recipes_serve_and_connect() {
    let dir = scratch("security-self-signed");
    sh(
        &dir,
        &documented_commands("docs/SECURITY.md", "For development"),
    );
    assert_eq!(serve_and_call(&dir, "server.crt").await.unwrap(), 3);
    let _ = std::fs::remove_dir_all(&dir);

    let dir = scratch("security-ca");
    sh(
        &dir,
        &documented_commands("docs/SECURITY.md", "For a CA that signs"),
    );
    assert_eq!(serve_and_call(&dir, "ca.crt").await.unwrap(), 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_ca_certificate_as_the_servers_own_says_what_to_do() {
    // What most people type first: `openssl req -x509` marks the certificate CA:TRUE.
    let dir = scratch("ca-as-server");
    sh(
        &dir,
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
         -subj /CN=localhost -addext subjectAltName=DNS:localhost \
         -keyout server.key -out server.crt",
    );
    let error = serve_and_call(&dir, "server.crt")
        .await
        .expect_err("a CA certificate is refused");
    let message = error.to_string();
    assert!(
        matches!(error, RpcError::Connect { .. }),
        "a connect error: {error:?}"
    );
    for needle in ["CA certificate", "CA:FALSE", "docs/SECURITY.md"] {
        assert!(
            message.contains(needle),
            "`{message}` should say `{needle}`"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
