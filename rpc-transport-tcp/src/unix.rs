//! Unix domain sockets, with the same API as TCP: [`serve`] and [`connect`] take a path.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::UnixStream;
use traitrpc_core::{
    ClientConfig, Connection, Established, Listener, PeerAddr, Router, RpcError, Server,
    ServerConfig, ServerHandle,
};

/// Binds a socket at `path` (which must not exist) and serves `services`.
pub async fn serve(
    path: impl AsRef<Path>,
    services: impl Into<Router>,
) -> io::Result<ServerHandle<PathBuf>> {
    serve_with_config(path, services, ServerConfig::default()).await
}

/// [`serve`] with explicit settings.
pub async fn serve_with_config(
    path: impl AsRef<Path>,
    services: impl Into<Router>,
    config: ServerConfig,
) -> io::Result<ServerHandle<PathBuf>> {
    let path = path.as_ref().to_path_buf();
    let listener = UnixListener::bind(&path)?;
    Ok(Server::with_config(services, config).serve(listener, path))
}

/// Connects to a server listening at `path`.
pub async fn connect(path: impl AsRef<Path>) -> Result<Connection, RpcError> {
    connect_with_config(path, ClientConfig::default()).await
}

/// [`connect`] with explicit settings.
pub async fn connect_with_config(
    path: impl AsRef<Path>,
    config: ClientConfig,
) -> Result<Connection, RpcError> {
    let path = path.as_ref();
    let name = format!("unix:{}", path.display());
    let error = |source: io::Error| RpcError::Connect {
        addr: name.clone(),
        source: Arc::new(source),
    };
    let timeout = config.connect_timeout_value();
    let attempt = traitrpc_core::client::with_version_fallback(config, |config| async {
        let stream = UnixStream::connect(path).await.map_err(error)?;
        Connection::handshake(stream, &name, config).await
    });
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(error(io::Error::new(
                io::ErrorKind::TimedOut,
                "connect timed out",
            )))
        })
}

/// A Unix domain socket listener for [`Server::serve`](traitrpc_core::Server::serve).
#[derive(Debug)]
pub struct UnixListener {
    inner: tokio::net::UnixListener,
}

impl UnixListener {
    /// Binds a socket at `path`.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<Self> {
        Ok(UnixListener {
            inner: tokio::net::UnixListener::bind(path)?,
        })
    }
}

impl Listener for UnixListener {
    type Accepted = UnixStream;
    type Io = UnixStream;

    fn establish(
        &self,
        stream: UnixStream,
    ) -> impl std::future::Future<Output = io::Result<Established<UnixStream>>> + Send + 'static
    {
        std::future::ready(Ok(Established::plain(stream)))
    }

    async fn accept(&mut self) -> io::Result<(UnixStream, PeerAddr)> {
        let (stream, peer) = self.inner.accept().await?;
        Ok((
            stream,
            PeerAddr::Unix(peer.as_pathname().map(Path::to_path_buf)),
        ))
    }
}
