//! Speaking the protocol by hand over a raw socket, for tests of broken and hostile
//! peers.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use traitrpc_core::protocol::{
    kind, ClientHello, Frame, ServerHello, Settings, COMPACT_VERSION, HANDSHAKE_LEN,
    SETTINGS_VERSION,
};

/// The newest version whose frames have the fixed layout these helpers write (version 5
/// frames are compact: `tests/compact_wire.rs`).
pub const FIXED_LAYOUT_VERSION: u16 = COMPACT_VERSION - 1;

/// A raw connection of the newest fixed-layout protocol version, through its handshake
/// (hellos and, when accepted, settings), with the server's hello.
pub async fn handshaken(addr: std::net::SocketAddr) -> (TcpStream, ServerHello) {
    handshaken_as(addr, FIXED_LAYOUT_VERSION).await
}

/// [`handshaken`] announcing protocol `version` (an older client).
pub async fn handshaken_as(addr: std::net::SocketAddr, version: u16) -> (TcpStream, ServerHello) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let hello = ClientHello {
        version,
        max_frame_size: 1 << 20,
    };
    stream.write_all(&hello.encode()).await.unwrap();
    let mut reply = [0u8; HANDSHAKE_LEN];
    stream.read_exact(&mut reply).await.unwrap();
    let reply = ServerHello::decode(&reply).unwrap();
    if reply.status == 0 && version >= SETTINGS_VERSION {
        let len = stream.read_u16().await.unwrap() as usize;
        let mut block = vec![0u8; len];
        stream.read_exact(&mut block).await.unwrap();
        Settings::decode(&block).unwrap();
        stream
            .write_all(&Settings::default().encode())
            .await
            .unwrap();
    }
    (stream, reply)
}

/// The next frame from the server, or `None` once it closes.
pub async fn next_frame(stream: &mut TcpStream) -> Option<Frame> {
    let read = async {
        let len = stream.read_u32().await.ok()? as usize;
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await.ok()?;
        Frame::decode(body.into()).ok()
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the server answered or closed in time")
}

/// A REQUEST frame body for `Probe.<method>` with `payload` as its arguments.
pub fn request(id: u64, method: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![kind::REQUEST, 0];
    body.extend_from_slice(&id.to_be_bytes());
    body.extend_from_slice(&5_000_000u64.to_be_bytes());
    body.push(5);
    body.extend_from_slice(b"Probe");
    body.push(method.len() as u8);
    body.extend_from_slice(method.as_bytes());
    body.extend_from_slice(&[0, 0]);
    body.extend_from_slice(payload);
    body
}

/// Writes one frame: its length, then `body`.
pub async fn send_frame(stream: &mut TcpStream, body: &[u8]) {
    stream.write_u32(body.len() as u32).await.unwrap();
    stream.write_all(body).await.unwrap();
}
