//! One port, two protocols: a server can hand connections that do not open with this
//! protocol's hello (`RRPC`...) to another protocol on the same port, for example the
//! HTTP gateway (`traitrpc_gateway::on_native_port`), so that native clients, curl and browsers
//! reach one address. The server tells them apart by the first 12 bytes, the length of
//! the native hello; a connection that is neither is closed as before.
//!
//! Connections served this way count toward the server's connection limit, are told of a
//! graceful shutdown ([`ForeignConnection::shutdown`]) and are dropped when the server's
//! grace period ends.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

use crate::context::{PeerAddr, PeerIdentity};

/// Another protocol served on a server's port ([`Server::share_port`]).
///
/// [`Server::share_port`]: super::Server::share_port
pub trait ForeignProtocol: Send + Sync + 'static {
    /// Whether a connection that opened with `prefix` (its first bytes: 12, or fewer if
    /// the peer sent fewer and closed) speaks this protocol.
    fn recognizes(&self, prefix: &[u8]) -> bool;

    /// Serves one connection until it ends.
    fn serve(&self, connection: ForeignConnection) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// The protocol a [`Server`](super::Server) shares its port with, if any.
#[derive(Clone, Default)]
pub(crate) struct SharedPort(pub(crate) Option<Arc<dyn ForeignProtocol>>);

impl fmt::Debug for SharedPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "shared with another protocol"
        } else {
            "native only"
        })
    }
}

/// A connection handed to a [`ForeignProtocol`]: the bytes already read, the stream, who
/// is at the other end, and the server's shutdown signal.
pub struct ForeignConnection {
    io: ForeignIo,
    peer: PeerAddr,
    identity: Option<PeerIdentity>,
    shutdown: CancellationToken,
}

impl fmt::Debug for ForeignConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForeignConnection")
            .field("peer", &self.peer)
            .finish()
    }
}

impl ForeignConnection {
    pub(crate) fn new(
        prefix: Vec<u8>,
        reader: Box<dyn AsyncRead + Send + Unpin>,
        writer: Box<dyn AsyncWrite + Send + Unpin>,
        peer: PeerAddr,
        identity: Option<PeerIdentity>,
        shutdown: CancellationToken,
    ) -> Self {
        ForeignConnection {
            io: ForeignIo {
                prefix,
                read: 0,
                reader,
                writer,
            },
            peer,
            identity,
            shutdown,
        }
    }

    /// The peer's address.
    pub fn peer(&self) -> &PeerAddr {
        &self.peer
    }

    /// The peer's verified identity (a TLS client certificate), if the transport has one.
    pub fn identity(&self) -> Option<&PeerIdentity> {
        self.identity.as_ref()
    }

    /// Cancelled when the server begins a graceful shutdown: finish what is in progress
    /// and close (the server drops the connection when its grace period ends).
    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The byte stream, starting with the bytes the server already read.
    pub fn into_io(self) -> ForeignIo {
        self.io
    }
}

/// A connection's byte stream as a [`ForeignProtocol`] sees it: the first bytes (read by
/// the server to recognise the protocol) come back first.
pub struct ForeignIo {
    prefix: Vec<u8>,
    read: usize,
    reader: Box<dyn AsyncRead + Send + Unpin>,
    writer: Box<dyn AsyncWrite + Send + Unpin>,
}

impl fmt::Debug for ForeignIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForeignIo").finish_non_exhaustive()
    }
}

impl AsyncRead for ForeignIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read < this.prefix.len() {
            let rest = &this.prefix[this.read..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.read += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.reader).poll_read(cx, buf)
    }
}

impl AsyncWrite for ForeignIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().writer).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().writer).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().writer).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().writer).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.writer.is_write_vectored()
    }
}
