//! Call ids reach the wire in the order they are given (with fresh ids, the default):
//! a GO_AWAY names the highest id the server read, and a client tells the calls the
//! server never saw (safe to send elsewhere) from those it may have run by that order.
//! The id used to be taken under one lock and the request queued under another, so two
//! callers could queue in the opposite order.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::{start, ProbeClient, ProbeImpl};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use traitrpc_core::protocol::{Frame, FrameLayout, HANDSHAKE_LEN};

/// A proxy that forwards both ways and records the id of every REQUEST the client sends
/// (version 5 frames), in wire order.
async fn request_recording_proxy(target: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<u64>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ids = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&ids);
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = tokio::net::TcpStream::connect(target).await.unwrap();
        client.set_nodelay(true).unwrap();
        server.set_nodelay(true).unwrap();
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        });
        // The hello, then the settings block (u16 length), then frames.
        let mut hello = [0u8; HANDSHAKE_LEN];
        client_read.read_exact(&mut hello).await.unwrap();
        server_write.write_all(&hello).await.unwrap();
        let len = client_read.read_u16().await.unwrap();
        let mut block = vec![0u8; len as usize];
        client_read.read_exact(&mut block).await.unwrap();
        server_write.write_all(&len.to_be_bytes()).await.unwrap();
        server_write.write_all(&block).await.unwrap();
        loop {
            let Ok(len) = client_read.read_u32().await else {
                return;
            };
            let mut frame = len.to_be_bytes().to_vec();
            frame.resize(4 + len as usize, 0);
            if client_read.read_exact(&mut frame[4..]).await.is_err() {
                return;
            }
            if let Ok(Frame::Request(request)) =
                Frame::decode_with(frame[4..].to_vec().into(), FrameLayout::Compact)
            {
                recorded.lock().unwrap().push(request.id);
            }
            server_write.write_all(&frame).await.unwrap();
        }
    });
    (addr, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_put_their_call_ids_on_the_wire_in_order() {
    let server = start(ProbeImpl::default()).await;
    let (proxy, ids) = request_recording_proxy(server.local_addr()).await;
    let probe = ProbeClient::new(traitrpc_transport_tcp::connect(proxy).await.unwrap());
    let callers: Vec<_> = (0..8)
        .map(|c| {
            let probe = probe.clone();
            tokio::spawn(async move {
                for i in 0..500u64 {
                    assert_eq!(probe.echo(c * 1000 + i).await.unwrap(), c * 1000 + i);
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    let ids = ids.lock().unwrap().clone();
    assert_eq!(ids.len(), 4000);
    let out_of_order = ids.windows(2).filter(|w| w[1] <= w[0]).count();
    assert_eq!(out_of_order, 0, "ids out of order on the wire");
    server.shutdown().await;
}
