//! The context of a call: deadline, request id, peer address and caller-set metadata.
//!
//! On the server, every handler runs inside its call's [`Context`], readable with
//! [`current`] or [`with_current`]. A client call made from inside a handler inherits the
//! remaining deadline, so a chain of calls never outlives the call that started it.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::time::Instant;

use crate::error::RpcError;
use crate::protocol::{varint, FrameLayout, WireStr};

/// The address of the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PeerAddr {
    /// A TCP peer.
    Tcp(SocketAddr),
    /// A Unix domain socket peer (usually unnamed on the accepting side).
    Unix(Option<PathBuf>),
    /// The in-memory transport.
    Memory,
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Tcp(addr) => write!(f, "{addr}"),
            PeerAddr::Unix(Some(path)) => write!(f, "unix:{}", path.display()),
            PeerAddr::Unix(None) => f.write_str("unix:(unnamed)"),
            PeerAddr::Memory => f.write_str("memory"),
        }
    }
}

/// A peer's verified identity: its TLS client certificate and the names in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    certificate: Vec<u8>,
    names: Vec<String>,
}

impl PeerIdentity {
    /// An identity from a verified certificate (DER) and the names it certifies (subject
    /// alternative names and common name, as the transport extracted them).
    pub fn new(certificate: Vec<u8>, names: Vec<String>) -> Self {
        PeerIdentity { certificate, names }
    }

    /// The verified end-entity certificate, DER-encoded.
    pub fn certificate(&self) -> &[u8] {
        &self.certificate
    }

    /// The names the certificate certifies.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// Facts about a server-side connection shared by every call on it.
#[derive(Debug)]
pub struct ConnectionInfo {
    peer: PeerAddr,
    identity: Option<PeerIdentity>,
}

impl ConnectionInfo {
    /// Describes a connection from `peer`, with its verified identity if any.
    pub fn new(peer: PeerAddr, identity: Option<PeerIdentity>) -> Self {
        ConnectionInfo { peer, identity }
    }

    /// The peer's address.
    pub fn peer(&self) -> &PeerAddr {
        &self.peer
    }

    /// The peer's verified identity (mutual TLS), if any.
    pub fn identity(&self) -> Option<&PeerIdentity> {
        self.identity.as_ref()
    }
}

/// Key/value metadata that a caller attaches to a call (credentials, trace ids, ...).
///
/// Keys are UTF-8 strings of at most 255 bytes, values are byte strings of at most
/// 65,535 bytes, and there are at most 65,535 entries. It is kept in its wire encoding, so
/// receiving it costs nothing until it is read, and cloning is a reference count.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Metadata {
    /// Number of entries.
    count: u16,
    /// The entries' wire encoding: per entry `u8` key length, key, `u16` value length,
    /// value.
    entries: Bytes,
}

impl Metadata {
    /// No entries.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The value of the first entry named `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The value of the first entry named `key`, if it is UTF-8.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// All entries in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        let mut rest = &self.entries[..];
        (0..self.len()).map(move |_| {
            // The encoding was checked when it was built or received.
            let key_len = rest[0] as usize;
            let key = std::str::from_utf8(&rest[1..1 + key_len]).unwrap_or_default();
            rest = &rest[1 + key_len..];
            let value_len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
            let value = &rest[2..2 + value_len];
            rest = &rest[2 + value_len..];
            (key, value)
        })
    }

    /// Sets `key` to `value`, replacing earlier entries of that key.
    pub fn insert(&mut self, key: &str, value: impl AsRef<[u8]>) -> Result<(), RpcError> {
        let value = value.as_ref();
        if key.len() > u8::MAX as usize {
            return Err(RpcError::Encode(format!(
                "metadata key of {} bytes exceeds 255 bytes",
                key.len()
            )));
        }
        if value.len() > u16::MAX as usize {
            return Err(RpcError::Encode(format!(
                "metadata value of {} bytes exceeds 65535 bytes",
                value.len()
            )));
        }
        let kept: Vec<(&str, &[u8])> = self.iter().filter(|(k, _)| *k != key).collect();
        if kept.len() >= u16::MAX as usize {
            return Err(RpcError::Encode("more than 65535 metadata entries".into()));
        }
        let mut buf = BytesMut::with_capacity(self.entries.len() + 3 + key.len() + value.len());
        let count = kept.len() as u16 + 1;
        for (k, v) in kept.into_iter().chain(std::iter::once((key, value))) {
            buf.put_u8(k.len() as u8);
            buf.put_slice(k.as_bytes());
            buf.put_u16(v.len() as u16);
            buf.put_slice(v);
        }
        self.count = count;
        self.entries = buf.freeze();
        Ok(())
    }

    /// Appends the wire encoding to `buf`: the count (`u16`, or a varint from version
    /// 5), then the entries.
    pub(crate) fn write_to(&self, buf: &mut BytesMut, layout: FrameLayout) {
        match layout {
            FrameLayout::Fixed => buf.put_u16(self.count),
            FrameLayout::Compact => varint::put(buf, u64::from(self.count)),
        }
        buf.put_slice(&self.entries);
    }

    /// Splits a metadata section off the front of a received frame, checking every length
    /// and key so that later reads cannot fail.
    pub(crate) fn split_from_wire(
        body: &mut Bytes,
        layout: FrameLayout,
    ) -> Result<Metadata, RpcError> {
        let bad = |what: &str| RpcError::Protocol(format!("malformed metadata: {what}"));
        let count = match layout {
            FrameLayout::Fixed => {
                if body.len() < 2 {
                    return Err(bad("truncated entry count"));
                }
                bytes::Buf::get_u16(body)
            }
            FrameLayout::Compact => u16::try_from(varint::take(body, "metadata count")?)
                .map_err(|_| bad("more than 65535 entries"))?,
        };
        if count == 0 {
            // The common case: no slice of the frame (no reference count) is kept.
            return Ok(Metadata::default());
        }
        let mut at = 0;
        for _ in 0..count {
            let key_len = *body.get(at).ok_or_else(|| bad("truncated key"))? as usize;
            let key = body
                .get(at + 1..at + 1 + key_len)
                .ok_or_else(|| bad("truncated key"))?;
            std::str::from_utf8(key).map_err(|_| bad("key is not UTF-8"))?;
            at += 1 + key_len;
            let len_bytes = body.get(at..at + 2).ok_or_else(|| bad("truncated value"))?;
            let value_len = u16::from_be_bytes([len_bytes[0], len_bytes[1]]) as usize;
            if body.len() < at + 2 + value_len {
                return Err(bad("truncated value"));
            }
            at += 2 + value_len;
        }
        let entries = body.split_to(at);
        Ok(Metadata { count, entries })
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(k, v)| (k, String::from_utf8_lossy(v))))
            .finish()
    }
}

/// The context of one call, as seen by its handler.
#[derive(Clone, Debug)]
pub struct Context {
    request_id: u64,
    deadline: Option<Instant>,
    service: &'static str,
    method: WireStr,
    flags: u8,
    metadata: Metadata,
    connection: Arc<ConnectionInfo>,
    /// Where the handler's response metadata goes, on transports that carry it (the
    /// HTTP gateway); `None` on the native protocol, which has no response metadata.
    response: Option<ResponseMetadata>,
}

/// The response metadata of one call, shared between its handler's [`Context`] and the
/// transport that answers it (cheap to clone).
#[derive(Clone, Debug, Default)]
pub struct ResponseMetadata(Arc<std::sync::Mutex<Metadata>>);

impl ResponseMetadata {
    /// What the handler has set so far.
    pub fn snapshot(&self) -> Metadata {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        request_id: u64,
        deadline: Option<Instant>,
        service: &'static str,
        method: WireStr,
        flags: u8,
        metadata: Metadata,
        connection: Arc<ConnectionInfo>,
    ) -> Self {
        Context {
            request_id,
            deadline,
            service,
            method,
            flags,
            metadata,
            connection,
            response: None,
        }
    }

    /// This context, with `response` receiving the handler's response metadata (for a
    /// transport that carries it: [`Context::set_response_metadata`]).
    pub fn with_response_metadata(mut self, response: ResponseMetadata) -> Self {
        self.response = Some(response);
        self
    }

    /// Sets response metadata `key` to `value` (replacing an earlier value), for the
    /// caller to read with the answer: HTTP callers of the gateway get it as a response
    /// header (unary calls) or trailer (streams), in Connect, gRPC and gRPC-Web.
    /// `Ok(false)` when the call's transport carries no response metadata: the native
    /// protocol does not yet, so a native caller does not see it. `Err` for a key or
    /// value over the metadata limits.
    pub fn set_response_metadata(
        &self,
        key: &str,
        value: impl AsRef<[u8]>,
    ) -> Result<bool, RpcError> {
        let Some(response) = &self.response else {
            return Ok(false);
        };
        response
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, value)?;
        Ok(true)
    }

    /// The context of a call that arrived by another transport (an HTTP gateway), so
    /// that middleware and handlers see it like a native call: `method` is one the
    /// service declares, `request_id` unique among that transport's calls in flight.
    #[allow(clippy::too_many_arguments)]
    pub fn for_transport(
        request_id: u64,
        deadline: Option<Instant>,
        service: &'static str,
        method: &'static str,
        idempotent: bool,
        metadata: Metadata,
        connection: Arc<ConnectionInfo>,
    ) -> Self {
        let flags = if idempotent {
            crate::protocol::flags::IDEMPOTENT
        } else {
            0
        };
        Context::new(
            request_id,
            deadline,
            service,
            WireStr::from_static(method),
            flags,
            metadata,
            connection,
        )
    }

    /// The call id, unique among the calls in flight on its connection.
    pub fn request_id(&self) -> u64 {
        self.request_id
    }

    /// When the caller stops waiting; `None` if the caller set no deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left until the deadline (zero once it has passed).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// The name of the called service.
    pub fn service(&self) -> &str {
        self.service
    }

    /// The name of the called service, as the server's own `&'static str`.
    pub fn service_static(&self) -> &'static str {
        self.service
    }

    /// The name of the called method.
    pub fn method(&self) -> &str {
        self.method.as_str()
    }

    /// The method's name as it came off the wire (cheap to clone).
    pub(crate) fn method_wire(&self) -> &WireStr {
        &self.method
    }

    /// Whether the caller marked the call idempotent.
    pub fn is_idempotent(&self) -> bool {
        self.flags & crate::protocol::flags::IDEMPOTENT != 0
    }

    /// The metadata the caller attached.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The address of the calling peer.
    pub fn peer(&self) -> &PeerAddr {
        self.connection.peer()
    }

    /// The calling peer's verified identity (mutual TLS), if any.
    pub fn peer_identity(&self) -> Option<&PeerIdentity> {
        self.connection.identity()
    }

    /// Facts about the connection the call came in on.
    pub fn connection(&self) -> &ConnectionInfo {
        &self.connection
    }
}

tokio::task_local! {
    static CURRENT: Context;
}

/// The context of the call whose handler is running on this task, if any.
///
/// Only the task the server runs the handler on sees it; a task the handler spawns does
/// not (pass the context along, or use [`scope`]).
pub fn current() -> Option<Context> {
    CURRENT.try_with(Context::clone).ok()
}

/// Runs `f` with the current call's context without cloning it.
pub fn with_current<R>(f: impl FnOnce(&Context) -> R) -> Option<R> {
    CURRENT.try_with(f).ok()
}

/// Runs `fut` with `ctx` as the current context (for tasks a handler spawns).
pub async fn scope<F: Future>(ctx: Context, fut: F) -> F::Output {
    CURRENT.scope(ctx, fut).await
}

/// Runs `f` with `ctx` as the current context (for polling a handler in place).
pub(crate) fn sync_scope<R>(ctx: Context, f: impl FnOnce() -> R) -> R {
    CURRENT.sync_scope(ctx, f)
}

/// The deadline of the call whose handler is running on this task, if any.
pub(crate) fn inherited_deadline() -> Option<Instant> {
    CURRENT.try_with(|c| c.deadline).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_metadata_reaches_a_transport_that_carries_it_and_says_when_none_does() {
        let connection = Arc::new(ConnectionInfo::new(PeerAddr::Memory, None));
        let native = Context::for_transport(1, None, "S", "m", false, Metadata::new(), connection);
        assert!(
            !native.set_response_metadata("x-a", "1").unwrap(),
            "not carried"
        );
        let response = ResponseMetadata::default();
        let http = native.clone().with_response_metadata(response.clone());
        assert!(http.set_response_metadata("x-a", "1").unwrap());
        assert!(http.clone().set_response_metadata("x-a", "2").unwrap());
        assert_eq!(response.snapshot().get_str("x-a"), Some("2"));
        assert!(http.set_response_metadata(&"k".repeat(300), "v").is_err());
    }

    #[test]
    fn metadata_insert_get_replace() {
        let mut md = Metadata::new();
        assert!(md.is_empty());
        md.insert("a", "1").unwrap();
        md.insert("b", b"\xff").unwrap();
        md.insert("a", "2").unwrap();
        assert_eq!(md.len(), 2);
        assert_eq!(md.get_str("a"), Some("2"));
        assert_eq!(md.get("b"), Some(&b"\xff"[..]));
        assert_eq!(md.get("c"), None);
        assert!(md.insert(&"k".repeat(256), "v").is_err());
    }

    #[test]
    fn metadata_round_trips_through_the_wire_form() {
        let mut md = Metadata::new();
        md.insert("token", "secret").unwrap();
        let mut buf = BytesMut::new();
        md.write_to(&mut buf, FrameLayout::Fixed);
        buf.put_slice(b"payload");
        let mut body = buf.freeze();
        let parsed = Metadata::split_from_wire(&mut body, FrameLayout::Fixed).unwrap();
        assert_eq!(parsed, md);
        assert_eq!(&body[..], b"payload");
    }

    #[test]
    fn malformed_metadata_is_rejected() {
        for raw in [
            &b""[..],
            &[0, 1][..],
            &[0, 1, 3, b'a'][..],
            &[0, 1, 1, 0xff, 0, 0][..],
            &[0, 1, 1, b'a', 0, 5, 1][..],
        ] {
            let mut body = Bytes::copy_from_slice(raw);
            assert!(
                Metadata::split_from_wire(&mut body, FrameLayout::Fixed).is_err(),
                "{raw:?}"
            );
        }
    }
}
