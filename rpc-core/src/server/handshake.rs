//! The server side of opening a connection: the transport's own handshake (TLS), the
//! 12-byte hellos and, from protocol version 3, the settings blocks (the server's after
//! its hello, then from version 6 its method fingerprints, then the client's settings),
//! all within the handshake timeout.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use std::sync::Arc;

use super::connection::Signals;
use super::foreign::{ForeignConnection, ForeignProtocol};
use super::ServerConfig;
use crate::compression::Compression;
use crate::context::{PeerAddr, PeerIdentity};
use crate::protocol::{
    handshake_status, ClientHello, PayloadCodec, ServerHello, Settings, CODEC_VERSION,
    COMPACT_VERSION, HANDSHAKE_LEN, MAGIC, MAX_SETTINGS_LEN, MIN_VERSION, SCHEMA_VERSION,
    SETTINGS_VERSION, VERSION,
};
use crate::transport::{Established, Transport};

/// An accepted, established connection, ready for frames.
pub(super) struct Opened<T: Transport> {
    pub(super) reader: T::Reader,
    pub(super) writer: T::Writer,
    pub(super) identity: Option<PeerIdentity>,
    /// The version spoken on the connection.
    pub(super) version: u16,
    /// The largest frame the client accepts.
    pub(super) client_max_frame: usize,
    /// The client's settings (the defaults before version 3).
    pub(super) client_settings: Settings,
    /// The payload codec the client chose (bincode before version 4).
    pub(super) codec: PayloadCodec,
}

/// The codecs a server accepts (setting `CODECS`): every one it knows.
const ACCEPTED_CODECS: u8 = 0b11;

/// What an accepted connection turned out to be.
pub(super) enum Opening<T: Transport> {
    /// A client of this protocol, through its handshake.
    Native(Opened<T>),
    /// A connection for the protocol the port is shared with ([`super::foreign`]).
    Foreign(ForeignConnection),
}

/// Opens one accepted connection; `None` if it was refused, failed, timed out, or the
/// server began shutting down first (all logged at debug level). A connection that does
/// not open with this protocol's magic goes to `foreign`, if that protocol recognises it.
pub(super) async fn open<T: Transport>(
    establishing: impl Future<Output = std::io::Result<Established<T>>>,
    peer: &PeerAddr,
    config: &ServerConfig,
    over_limit: bool,
    signals: &Signals,
    foreign: Option<&Arc<dyn ForeignProtocol>>,
    fingerprints: &[u8],
) -> Option<Opening<T>> {
    let opening = async {
        let established = establishing.await?;
        let (mut reader, mut writer) = established.io.split();
        let mut hello = [0u8; HANDSHAKE_LEN];
        let read = read_up_to(&mut reader, &mut hello).await?;
        if let Some(foreign) = foreign {
            if hello[..4] != MAGIC && foreign.recognizes(&hello[..read]) {
                if over_limit {
                    return Ok(Err("a foreign connection over the connection limit".into()));
                }
                return Ok(Ok(Opening::Foreign(ForeignConnection::new(
                    hello[..read].to_vec(),
                    Box::new(reader),
                    Box::new(writer),
                    peer.clone(),
                    established.identity,
                    signals.graceful.clone(),
                ))));
            }
        }
        if read < HANDSHAKE_LEN {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let hello = match ClientHello::decode(&hello) {
            Ok(hello) => hello,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let supported = (MIN_VERSION..=VERSION).contains(&hello.version);
        let status = if !supported {
            handshake_status::UNSUPPORTED_VERSION
        } else if over_limit {
            handshake_status::TOO_MANY_CONNECTIONS
        } else {
            handshake_status::ACCEPTED
        };
        let reply = ServerHello {
            // The version spoken on this connection: the client's, when supported.
            version: if supported { hello.version } else { VERSION },
            status,
            max_frame_size: config.max_frame_size as u32,
        };
        let mut out = reply.encode().to_vec();
        let settings = status == handshake_status::ACCEPTED && hello.version >= SETTINGS_VERSION;
        if settings {
            let ours = Settings {
                stream_window: config.stream_window,
                accepted_codecs: (hello.version >= CODEC_VERSION).then_some(ACCEPTED_CODECS),
                codec: None,
                compressions: (hello.version >= COMPACT_VERSION).then(Compression::supported),
            };
            out.extend_from_slice(&ours.encode());
            // Version 6: the methods' fingerprints, so the client knows before its first
            // call which of its methods it must send in JSON by name.
            if hello.version >= SCHEMA_VERSION {
                out.extend_from_slice(fingerprints);
            }
        }
        writer.write_all(&out).await?;
        if status != handshake_status::ACCEPTED {
            let _ = tokio::time::timeout(Duration::from_secs(1), writer.shutdown()).await;
            return Ok(Err(format!(
                "refused version {} with status {status}",
                hello.version
            )));
        }
        let mut client_settings = Settings::default();
        if settings {
            let mut len = [0u8; 2];
            reader.read_exact(&mut len).await?;
            let len = u16::from_be_bytes(len) as usize;
            if len > MAX_SETTINGS_LEN {
                return Ok(Err(format!("a settings block of {len} bytes")));
            }
            let mut block = vec![0u8; len];
            reader.read_exact(&mut block).await?;
            client_settings = match Settings::decode(&block) {
                Ok(settings) => settings,
                Err(e) => return Ok(Err(e.to_string())),
            };
        }
        // Only version 4 defines the codec setting; older clients speak bincode.
        let codec = match client_settings.codec {
            Some(codec) if hello.version >= CODEC_VERSION => codec,
            _ => PayloadCodec::Bincode,
        };
        Ok::<_, std::io::Error>(Ok(Opening::Native(Opened {
            reader,
            writer,
            identity: established.identity,
            version: hello.version,
            client_max_frame: (hello.max_frame_size as usize).max(64),
            client_settings,
            codec,
        })))
    };
    let outcome = tokio::select! {
        r = tokio::time::timeout(config.handshake_timeout, opening) => r,
        _ = signals.graceful.cancelled() => return None,
        _ = signals.kill.cancelled() => return None,
    };
    match outcome {
        Ok(Ok(Ok(opened))) => Some(opened),
        Ok(Ok(Err(reason))) => {
            tracing::debug!(%peer, %reason, "refused connection");
            None
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "connection failed during the handshake");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "handshake timed out");
            None
        }
    }
}

/// Reads until `buf` is full or the peer closes; returns how much was read.
async fn read_up_to(
    reader: &mut (impl tokio::io::AsyncRead + Unpin),
    buf: &mut [u8],
) -> std::io::Result<usize> {
    let mut read = 0;
    while read < buf.len() {
        match reader.read(&mut buf[read..]).await? {
            0 => break,
            n => read += n,
        }
    }
    Ok(read)
}
