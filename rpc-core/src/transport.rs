//! What the core needs from a transport: a byte stream it can split into a read half and
//! a write half ([`Transport`]), and on the server side a way to accept them
//! ([`Listener`]). TCP and Unix sockets live in `traitrpc-transport-tcp`; the in-memory
//! transport for tests lives here in [`memory`].

use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};

use crate::context::{PeerAddr, PeerIdentity};

/// A connected byte stream that splits into independently usable halves.
pub trait Transport: Send + 'static {
    /// The read half.
    type Reader: AsyncRead + Send + Unpin + 'static;
    /// The write half.
    type Writer: AsyncWrite + Send + Unpin + 'static;
    /// Splits the stream.
    fn split(self) -> (Self::Reader, Self::Writer);
}

impl Transport for tokio::net::TcpStream {
    type Reader = tokio::net::tcp::OwnedReadHalf;
    type Writer = tokio::net::tcp::OwnedWriteHalf;
    fn split(self) -> (Self::Reader, Self::Writer) {
        self.into_split()
    }
}

#[cfg(unix)]
impl Transport for tokio::net::UnixStream {
    type Reader = tokio::net::unix::OwnedReadHalf;
    type Writer = tokio::net::unix::OwnedWriteHalf;
    fn split(self) -> (Self::Reader, Self::Writer) {
        self.into_split()
    }
}

/// Any `AsyncRead + AsyncWrite` stream (a TLS stream, a test double) as a [`Transport`],
/// split with [`tokio::io::split`].
pub struct SplitIo<T>(pub T);

impl<T> Transport for SplitIo<T>
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    type Reader = ReadHalf<T>;
    type Writer = WriteHalf<T>;
    fn split(self) -> (Self::Reader, Self::Writer) {
        tokio::io::split(self.0)
    }
}

/// A source of incoming connections for a server.
///
/// Accepting is split in two: [`accept`](Listener::accept) runs on the accept loop and
/// must be quick; [`establish`](Listener::establish) runs on the new connection's own
/// task, within the server's handshake timeout, and does the slow part (a TLS handshake),
/// so one slow peer never holds up the others.
pub trait Listener: Send + 'static {
    /// A connection as accepted, before it is established.
    type Accepted: Send + 'static;
    /// The established byte stream.
    type Io: Transport;
    /// Accepts the next connection and names its peer.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Accepted, PeerAddr)>> + Send;
    /// Completes an accepted connection (for example its TLS handshake), reporting the
    /// peer's verified identity if the transport has one.
    fn establish(
        &self,
        accepted: Self::Accepted,
    ) -> impl Future<Output = io::Result<Established<Self::Io>>> + Send + 'static;
}

/// An established server-side connection.
pub struct Established<Io> {
    /// The byte stream.
    pub io: Io,
    /// The peer's verified identity (a TLS client certificate), if any.
    pub identity: Option<PeerIdentity>,
}

impl<Io> Established<Io> {
    /// A connection with no verified peer identity.
    pub fn plain(io: Io) -> Self {
        Established { io, identity: None }
    }
}

/// An in-memory transport: a listener and a connector joined by `tokio::io::duplex`
/// pipes. For tests and for calling a service in-process through the full protocol.
pub mod memory {
    use super::*;
    use tokio::io::DuplexStream;
    use tokio::sync::mpsc;

    use crate::client::{ClientConfig, Connection};
    use crate::error::RpcError;

    /// Buffer size of each direction of an in-memory connection.
    const PIPE_CAPACITY: usize = 256 * 1024;

    /// The server side: yields one stream per [`Connector::connect`].
    pub struct MemoryListener {
        incoming: mpsc::UnboundedReceiver<DuplexStream>,
    }

    /// The client side: opens connections to the paired [`MemoryListener`].
    #[derive(Clone)]
    pub struct Connector {
        outgoing: mpsc::UnboundedSender<DuplexStream>,
    }

    /// A listener and a connector that reaches it.
    pub fn listener() -> (MemoryListener, Connector) {
        let (outgoing, incoming) = mpsc::unbounded_channel();
        (MemoryListener { incoming }, Connector { outgoing })
    }

    impl Connector {
        /// Opens a raw in-memory stream to the listener (no handshake).
        pub fn connect_raw(&self) -> io::Result<DuplexStream> {
            let (client, server) = tokio::io::duplex(PIPE_CAPACITY);
            self.outgoing.send(server).map_err(|_| {
                io::Error::new(io::ErrorKind::ConnectionRefused, "memory listener is gone")
            })?;
            Ok(client)
        }

        /// Opens a connection to the listener with the default client configuration.
        pub async fn connect(&self) -> Result<Connection, RpcError> {
            self.connect_with_config(ClientConfig::default()).await
        }

        /// Opens a connection to the listener.
        pub async fn connect_with_config(
            &self,
            config: ClientConfig,
        ) -> Result<Connection, RpcError> {
            let stream = self.connect_raw().map_err(|e| RpcError::Connect {
                addr: "memory".into(),
                source: e.into(),
            })?;
            Connection::handshake(SplitIo(stream), "memory", config).await
        }
    }

    impl Listener for MemoryListener {
        type Accepted = DuplexStream;
        type Io = SplitIo<DuplexStream>;

        async fn accept(&mut self) -> io::Result<(DuplexStream, PeerAddr)> {
            match self.incoming.recv().await {
                Some(stream) => Ok((stream, PeerAddr::Memory)),
                None => std::future::pending().await,
            }
        }

        fn establish(
            &self,
            stream: DuplexStream,
        ) -> impl Future<Output = io::Result<Established<Self::Io>>> + Send + 'static {
            std::future::ready(Ok(Established::plain(SplitIo(stream))))
        }
    }
}
