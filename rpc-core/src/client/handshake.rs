//! Opening a client connection: the 12-byte hellos and, from protocol version 3, the
//! settings blocks (the server's follows its hello, from version 6 with its method
//! fingerprints after it; the client answers with its own settings).
//! [`with_version_fallback`] retries once with an older server's version.

use std::future::Future;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::ClientConfig;
use crate::compression::Compression;
use crate::error::RpcError;
use crate::protocol::{
    handshake_status, ClientHello, Fingerprints, PayloadCodec, ServerHello, Settings,
    CODEC_VERSION, COMPACT_VERSION, HANDSHAKE_LEN, MAX_FINGERPRINTS_LEN, MAX_SETTINGS_LEN,
    MIN_VERSION, SCHEMA_VERSION, SETTINGS_VERSION,
};

/// What the handshake settled.
pub(super) struct Negotiated {
    /// The version spoken on the connection.
    pub(super) version: u16,
    /// The largest frame the server accepts.
    pub(super) server_max_frame: usize,
    /// The server's settings (the defaults before version 3).
    pub(super) server_settings: Settings,
    /// The server's method fingerprints (version 6; `None` before).
    pub(super) fingerprints: Option<Arc<Fingerprints>>,
}

/// Runs the client side of the handshake on a fresh stream.
pub(super) async fn negotiate<R, W>(
    reader: &mut R,
    writer: &mut W,
    remote: &str,
    config: &ClientConfig,
) -> Result<Negotiated, RpcError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let io_error = |source: std::io::Error| RpcError::Connect {
        addr: remote.to_string(),
        source: Arc::new(source),
    };
    let version = config.protocol_version;
    let hello = ClientHello {
        version,
        max_frame_size: config.max_frame_size as u32,
    };
    writer.write_all(&hello.encode()).await.map_err(io_error)?;
    let mut reply = [0u8; HANDSHAKE_LEN];
    reader.read_exact(&mut reply).await.map_err(io_error)?;
    let reply = ServerHello::decode(&reply)?;
    if reply.status == handshake_status::UNSUPPORTED_VERSION || reply.version != version {
        return Err(RpcError::VersionMismatch {
            ours: version,
            theirs: reply.version,
        });
    }
    if reply.status == handshake_status::TOO_MANY_CONNECTIONS {
        return Err(RpcError::Overloaded {
            message: format!("{remote} is at its connection limit"),
        });
    }
    if reply.status != handshake_status::ACCEPTED {
        return Err(RpcError::Protocol(format!(
            "the server refused the handshake with status {}",
            reply.status
        )));
    }
    let mut server_settings = Settings::default();
    let mut fingerprints = None;
    if version < SETTINGS_VERSION && config.codec != PayloadCodec::Bincode {
        return Err(RpcError::CodecUnsupported {
            codec: config.codec,
            version,
        });
    }
    if version >= SETTINGS_VERSION {
        let mut len = [0u8; 2];
        reader.read_exact(&mut len).await.map_err(io_error)?;
        let len = u16::from_be_bytes(len) as usize;
        if len > MAX_SETTINGS_LEN {
            return Err(RpcError::Protocol(format!(
                "the server's settings block of {len} bytes exceeds {MAX_SETTINGS_LEN}"
            )));
        }
        let mut block = vec![0u8; len];
        reader.read_exact(&mut block).await.map_err(io_error)?;
        server_settings = Settings::decode(&block)?;
        if version >= SCHEMA_VERSION {
            let mut len = [0u8; 4];
            reader.read_exact(&mut len).await.map_err(io_error)?;
            let len = u32::from_be_bytes(len) as usize;
            if len > MAX_FINGERPRINTS_LEN {
                return Err(RpcError::Protocol(format!(
                    "the server's fingerprint block of {len} bytes exceeds {MAX_FINGERPRINTS_LEN}"
                )));
            }
            let mut block = vec![0u8; len];
            reader.read_exact(&mut block).await.map_err(io_error)?;
            fingerprints = Some(Arc::new(Fingerprints::decode(&block)?));
        }
        let codec = config.codec;
        if codec != PayloadCodec::Bincode {
            let accepted = version >= CODEC_VERSION
                && server_settings
                    .accepted_codecs
                    .is_some_and(|mask| mask & codec.bit() != 0);
            if !accepted {
                return Err(RpcError::CodecUnsupported { codec, version });
            }
        }
        let ours = Settings {
            stream_window: config.stream_window,
            accepted_codecs: None,
            // Said only when it is not the default, so that the block stays as short as
            // version 3's for bincode connections.
            codec: (codec != PayloadCodec::Bincode).then_some(codec),
            compressions: (version >= COMPACT_VERSION).then(Compression::supported),
        };
        writer.write_all(&ours.encode()).await.map_err(io_error)?;
    }
    Ok(Negotiated {
        version,
        // A server announcing less than a header's worth is treated as announcing 64.
        server_max_frame: (reply.max_frame_size as usize).max(64),
        server_settings,
        fingerprints,
    })
}

/// Runs `attempt` with `config`; if the server refused the version because it speaks an
/// older one this client also speaks, runs it once more announcing that version. For
/// transports: `attempt` opens a new stream and calls [`Connection::handshake`] on it.
///
/// [`Connection::handshake`]: super::Connection::handshake
pub async fn with_version_fallback<F, Fut, T>(
    config: ClientConfig,
    mut attempt: F,
) -> Result<T, RpcError>
where
    F: FnMut(ClientConfig) -> Fut,
    Fut: Future<Output = Result<T, RpcError>>,
{
    let ours = config.protocol_version;
    match attempt(config.clone()).await {
        Err(RpcError::VersionMismatch { theirs, .. }) if (MIN_VERSION..ours).contains(&theirs) => {
            tracing::debug!(
                ours,
                theirs,
                "the server speaks an older protocol version; reconnecting with it"
            );
            attempt(config.max_protocol_version(theirs)).await
        }
        outcome => outcome,
    }
}
