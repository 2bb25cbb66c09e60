//! Streaming methods: server, client and bidirectional streams, multiplexed with unary
//! calls, with flow control, cancellation both ways, deadlines and errors.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use traitrpc_core::{service, ByteBuf, RpcError, Streaming};

#[service]
pub trait Streams {
    /// `count` numbers from `from`.
    async fn count(&self, from: u64, count: u64) -> Streaming<u64>;
    /// The sum of the numbers sent.
    async fn sum(&self, numbers: Streaming<u64>) -> u64;
    /// Each item sent back with `prefix`.
    async fn echo(&self, prefix: String, items: Streaming<String>) -> Streaming<String>;
    /// `n` items, then an error.
    async fn fail_after(&self, n: u64) -> Streaming<u64>;
    /// Numbers forever (counts how many it produced, and whether it was dropped).
    async fn forever(&self) -> Streaming<u64>;
    /// `total` bytes in chunks of `chunk` bytes.
    async fn bytes(&self, total: u64, chunk: u32) -> Streaming<ByteBuf>;
    /// Reads `n` items of the stream sent, then drops it.
    async fn take(&self, n: u64, items: Streaming<u64>) -> u64;
    /// The sum, or an application error if a zero is sent.
    async fn checked_sum(&self, numbers: Streaming<u64>) -> Result<u64, String>;
    /// A unary call on the same service.
    async fn ping(&self, v: u64) -> u64;
    /// Holds the stream sent without reading it, and never returns.
    async fn hoard(&self, items: Streaming<()>) -> u64;
}

#[derive(Default)]
struct Counters {
    produced: AtomicUsize,
    producers_dropped: AtomicUsize,
}

#[derive(Clone, Default)]
struct StreamsImpl {
    counters: Arc<Counters>,
}

/// Counts a producer's drop.
struct DropCounter(Arc<Counters>);
impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.producers_dropped.fetch_add(1, Ordering::SeqCst);
    }
}

impl Streams for StreamsImpl {
    async fn count(&self, from: u64, count: u64) -> Streaming<u64> {
        Streaming::iter(from..from + count)
    }

    async fn sum(&self, mut numbers: Streaming<u64>) -> u64 {
        let mut total = 0;
        while let Some(n) = numbers.next().await {
            total += n.unwrap();
        }
        total
    }

    async fn echo(&self, prefix: String, items: Streaming<String>) -> Streaming<String> {
        Streaming::from_results(items.map(move |item| item.map(|s| format!("{prefix}{s}"))))
    }

    async fn fail_after(&self, n: u64) -> Streaming<u64> {
        Streaming::from_results(futures::stream::iter((0..=n).map(move |i| {
            if i < n {
                Ok(i)
            } else {
                Err(RpcError::Aborted {
                    message: format!("gave up after {n}"),
                })
            }
        })))
    }

    async fn forever(&self) -> Streaming<u64> {
        let counters = Arc::clone(&self.counters);
        let guard = DropCounter(Arc::clone(&counters));
        Streaming::from_stream(futures::stream::iter(0..).map(move |i| {
            let _ = &guard;
            counters.produced.fetch_add(1, Ordering::SeqCst);
            i
        }))
    }

    async fn bytes(&self, total: u64, chunk: u32) -> Streaming<ByteBuf> {
        let counters = Arc::clone(&self.counters);
        let chunks = total.div_ceil(chunk as u64);
        Streaming::from_stream(futures::stream::iter(0..chunks).map(move |_| {
            counters.produced.fetch_add(1, Ordering::SeqCst);
            ByteBuf::from(vec![0xab; chunk as usize])
        }))
    }

    async fn take(&self, n: u64, mut items: Streaming<u64>) -> u64 {
        let mut taken = 0;
        while taken < n {
            match items.next().await {
                Some(Ok(_)) => taken += 1,
                _ => break,
            }
        }
        drop(items);
        // Keep the call open a little, so only the stream's drop stops the client.
        tokio::time::sleep(Duration::from_millis(300)).await;
        taken
    }

    async fn checked_sum(&self, mut numbers: Streaming<u64>) -> Result<u64, String> {
        let mut total = 0;
        while let Some(n) = numbers.next().await {
            match n.map_err(|e| e.to_string())? {
                0 => return Err("zero".into()),
                n => total += n,
            }
        }
        Ok(total)
    }

    async fn ping(&self, v: u64) -> u64 {
        v
    }

    async fn hoard(&self, items: Streaming<()>) -> u64 {
        let _held = items;
        std::future::pending().await
    }
}

async fn tcp() -> (
    traitrpc_core::ServerHandle<std::net::SocketAddr>,
    StreamsClient,
    Arc<Counters>,
) {
    let imp = StreamsImpl::default();
    let counters = Arc::clone(&imp.counters);
    let server = traitrpc_transport_tcp::serve("127.0.0.1:0", StreamsServer::new(imp))
        .await
        .unwrap();
    let client = StreamsClient::new(
        traitrpc_transport_tcp::connect(server.local_addr())
            .await
            .unwrap(),
    );
    (server, client, counters)
}

/// The three kinds of stream over one connection.
async fn all_three_kinds(client: &StreamsClient) {
    let numbers: Vec<u64> = client
        .count(5, 100)
        .await
        .unwrap()
        .map(|n| n.unwrap())
        .collect()
        .await;
    assert_eq!(numbers, (5..105).collect::<Vec<_>>());

    let total = client.sum(Streaming::iter(1..=1000u64)).await.unwrap();
    assert_eq!(total, 500_500);

    let words: Vec<String> = (0..100).map(|i| format!("w{i}")).collect();
    let echoed: Vec<String> = client
        .echo("> ".into(), Streaming::iter(words.clone()))
        .await
        .unwrap()
        .map(|s| s.unwrap())
        .collect()
        .await;
    assert_eq!(
        echoed,
        words.iter().map(|w| format!("> {w}")).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn server_client_and_bidirectional_streams_over_tcp() {
    let (server, client, _) = tcp().await;
    all_three_kinds(&client).await;
    server.shutdown().await;
}

#[cfg(unix)]
#[tokio::test]
async fn all_three_kinds_over_a_unix_socket() {
    let dir = std::env::temp_dir().join(format!("rpc-stream-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("streams.sock");
    let _ = std::fs::remove_file(&path);
    let server =
        traitrpc_transport_tcp::unix::serve(&path, StreamsServer::new(StreamsImpl::default()))
            .await
            .unwrap();
    let client = StreamsClient::new(traitrpc_transport_tcp::unix::connect(&path).await.unwrap());
    all_three_kinds(&client).await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn all_three_kinds_over_the_in_memory_transport() {
    let (listener, connector) = traitrpc_core::memory::listener();
    let server =
        traitrpc_core::Server::new(StreamsServer::new(StreamsImpl::default())).serve(listener, ());
    let client = StreamsClient::new(connector.connect().await.unwrap());
    all_three_kinds(&client).await;
    server.shutdown().await;
}

#[tokio::test]
async fn many_streams_and_unary_calls_share_one_connection() {
    let (server, client, _) = tcp().await;
    let streams = (0..20u64).map(|i| {
        let client = client.clone();
        tokio::spawn(async move {
            let got: Vec<u64> = client
                .count(i * 1000, 500)
                .await
                .unwrap()
                .map(|n| n.unwrap())
                .collect()
                .await;
            assert_eq!(got, (i * 1000..i * 1000 + 500).collect::<Vec<_>>());
        })
    });
    let pings = (0..200u64).map(|i| {
        let client = client.clone();
        tokio::spawn(async move { assert_eq!(client.ping(i).await.unwrap(), i) })
    });
    for task in streams.chain(pings) {
        task.await.unwrap();
    }
    server.shutdown().await;
}

#[tokio::test]
async fn an_error_ends_a_stream_after_its_items() {
    let (server, client, _) = tcp().await;
    let mut stream = client.fail_after(3).await.unwrap();
    for expected in 0..3 {
        assert_eq!(stream.next().await.unwrap().unwrap(), expected);
    }
    match stream.next().await {
        Some(Err(RpcError::Aborted { message })) => assert_eq!(message, "gave up after 3"),
        other => panic!("expected the abort, got {other:?}"),
    }
    assert!(stream.next().await.is_none());
    // A client stream can end with an error too, and fallible methods stay flat.
    let error = client
        .checked_sum(Streaming::iter([1, 2, 0, 4]))
        .await
        .unwrap_err();
    assert!(matches!(error, traitrpc_core::CallError::Application(e) if e == "zero"));
    assert_eq!(
        client
            .checked_sum(Streaming::iter([1, 2, 3]))
            .await
            .unwrap(),
        6
    );
    server.shutdown().await;
}

#[tokio::test]
async fn dropping_a_received_stream_stops_the_server_producing() {
    let (server, client, counters) = tcp().await;
    let mut stream = client.forever().await.unwrap();
    for _ in 0..10 {
        stream.next().await.unwrap().unwrap();
    }
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    while counters.producers_dropped.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        counters.producers_dropped.load(Ordering::SeqCst),
        1,
        "the producer was dropped"
    );
    let produced = counters.produced.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        counters.produced.load(Ordering::SeqCst),
        produced,
        "and produces no more"
    );
    assert_eq!(client.ping(1).await.unwrap(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_handler_dropping_its_request_stream_stops_the_client_producing() {
    let (server, client, _) = tcp().await;
    let produced = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&produced);
    let endless = Streaming::from_stream(futures::stream::iter(0u64..).map(move |i| {
        counter.fetch_add(1, Ordering::SeqCst);
        i
    }));
    assert_eq!(client.take(10, endless).await.unwrap(), 10);
    let after_call = produced.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        produced.load(Ordering::SeqCst),
        after_call,
        "the upload stopped"
    );
    // At most a window's worth was produced beyond what the handler read.
    assert!(after_call < 100_000, "{after_call}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_deadline_covers_the_whole_stream() {
    let (server, client, counters) = tcp().await;
    let started = Instant::now();
    let mut stream = client
        .with_timeout(Duration::from_millis(300))
        .forever()
        .await
        .unwrap();
    let mut received = 0u64;
    let error = loop {
        match stream.next().await {
            Some(Ok(_)) => {
                received += 1;
                // A slow reader.
                if received.is_multiple_of(100) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            Some(Err(e)) => break e,
            None => panic!("the stream ended without an error"),
        }
    };
    assert_eq!(error, RpcError::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(stream.next().await.is_none());
    let deadline = Instant::now() + Duration::from_secs(5);
    while counters.producers_dropped.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(counters.producers_dropped.load(Ordering::SeqCst), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn connection_loss_ends_every_stream_with_a_typed_error() {
    let (server, client, _) = tcp().await;
    let mut stream = client.forever().await.unwrap();
    stream.next().await.unwrap().unwrap();
    server.abort().await;
    let error = loop {
        match stream.next().await {
            Some(Ok(_)) => continue,
            Some(Err(e)) => break e,
            None => panic!("ended without an error"),
        }
    };
    assert!(
        matches!(error, RpcError::ConnectionClosed { .. }),
        "{error:?}"
    );
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn a_slow_consumer_bounds_the_producer_by_the_window() {
    let (server, client, counters) = tcp().await;
    let chunk = 64 * 1024u32;
    let before = rss_kib();
    // A 1 GiB stream, read slowly: the producer may only run a window ahead.
    let mut stream = client.bytes(1 << 30, chunk).await.unwrap();
    for i in 0..40 {
        let item = stream.next().await.unwrap().unwrap();
        assert_eq!(item.len(), chunk as usize);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let ahead = counters.produced.load(Ordering::SeqCst) as i64 - (i + 1);
        let window_items = (traitrpc_core::protocol::INITIAL_STREAM_WINDOW / chunk) as i64;
        assert!(
            ahead <= window_items + 2,
            "{ahead} items ahead with a {window_items}-item window"
        );
    }
    let grown = rss_kib().saturating_sub(before);
    assert!(
        grown < 64 * 1024,
        "RSS grew by {grown} KiB while 1 GiB was on offer"
    );
    drop(stream);
    server.shutdown().await;
}

#[tokio::test]
async fn unary_calls_stay_fast_during_a_bulk_transfer() {
    let (server, client, _) = tcp().await;
    let transfer = tokio::spawn({
        let client = client.clone();
        async move {
            let mut stream = client.bytes(64 << 20, 64 * 1024).await.unwrap();
            let mut total = 0;
            while let Some(item) = stream.next().await {
                total += item.unwrap().len();
            }
            total
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut slowest = Duration::ZERO;
    for i in 0..50 {
        let started = Instant::now();
        assert_eq!(client.ping(i).await.unwrap(), i);
        slowest = slowest.max(started.elapsed());
    }
    assert_eq!(transfer.await.unwrap(), 64 << 20);
    // Not a benchmark (see the interleave benchmark for figures): only that small calls
    // are not stuck behind the transfer.
    assert!(slowest < Duration::from_secs(2), "{slowest:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_protocol_1_client_still_makes_unary_calls_but_not_streaming_ones() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use traitrpc_core::protocol::{kind, status, ClientHello, Frame, ServerHello, HANDSHAKE_LEN};
    let (server, _, _) = tcp().await;
    let mut stream = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    stream
        .write_all(
            &ClientHello {
                version: 1,
                max_frame_size: 1 << 20,
            }
            .encode(),
        )
        .await
        .unwrap();
    let mut reply = [0u8; HANDSHAKE_LEN];
    stream.read_exact(&mut reply).await.unwrap();
    let reply = ServerHello::decode(&reply).unwrap();
    assert_eq!(
        (reply.status, reply.version),
        (0, 1),
        "accepted, speaking version 1"
    );
    for (id, method, payload) in [(1u64, "ping", vec![9u8]), (2, "count", vec![0, 3])] {
        let mut body = vec![kind::REQUEST, 0];
        body.extend_from_slice(&id.to_be_bytes());
        body.extend_from_slice(&1_000_000u64.to_be_bytes());
        body.push(7);
        body.extend_from_slice(b"Streams");
        body.push(method.len() as u8);
        body.extend_from_slice(method.as_bytes());
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(&payload);
        stream.write_u32(body.len() as u32).await.unwrap();
        stream.write_all(&body).await.unwrap();
        let len = stream.read_u32().await.unwrap();
        let mut frame = vec![0u8; len as usize];
        stream.read_exact(&mut frame).await.unwrap();
        match Frame::decode(frame.into()).unwrap() {
            Frame::Response(r) if id == 1 => {
                assert_eq!((r.status, &r.payload[..]), (status::OK, &[9u8][..]))
            }
            Frame::Response(r) => assert_eq!(r.status, status::INVALID_ARGUMENTS),
            other => panic!("{other:?}"),
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn streams_pass_through_a_handle_in_process() {
    let server = StreamsServer::new(StreamsImpl::default());
    match server
        .handle(StreamsRequest::Sum {
            numbers: Streaming::iter([1, 2, 3]),
        })
        .await
    {
        StreamsResponse::Sum(total) => assert_eq!(total, 6),
        _ => panic!("wrong variant"),
    }
}

#[tokio::test]
async fn streams_at_the_in_flight_limit_still_receive_their_items() {
    // Two client streams fill the connection's limit of 2; their items arrive after the
    // requests, so the server must keep reading (and shed further calls) instead of
    // stopping until a call ends, which would never happen.
    let server = traitrpc_transport_tcp::serve_with_config(
        "127.0.0.1:0",
        StreamsServer::new(StreamsImpl::default()),
        traitrpc_core::ServerConfig::default().max_in_flight_per_connection(2),
    )
    .await
    .unwrap();
    let client = StreamsClient::new(
        traitrpc_transport_tcp::connect(server.local_addr())
            .await
            .unwrap(),
    );
    let slow = |n: u64| {
        Streaming::from_stream(futures::stream::iter(1..=n).then(|i| async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            i
        }))
    };
    let started = Instant::now();
    let client = client.with_timeout(Duration::from_secs(10));
    let (a, b) = tokio::join!(client.sum(slow(100)), client.sum(slow(100)));
    assert_eq!((a.unwrap(), b.unwrap()), (5050, 5050));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn streams_outlive_a_temporary_client_and_its_connection_handle() {
    let (server, _, _) = tcp().await;
    let addr = server.local_addr();
    // The client (and with it the only caller-held connection handle) is a temporary:
    // the stream alone keeps the connection open until it has delivered everything.
    let mut download = StreamsClient::new(traitrpc_transport_tcp::connect(addr).await.unwrap())
        .bytes(8 << 20, 64 << 10)
        .await
        .unwrap();
    let mut received = 0;
    while let Some(chunk) = download.next().await {
        received += chunk.unwrap().len();
    }
    assert_eq!(received, 8 << 20);

    // A bidirectional call: the upload and the answer both go on after the handle is
    // gone.
    let words: Vec<String> = (0..5000).map(|i| format!("{i:04}")).collect();
    let echoed: Vec<String> =
        StreamsClient::new(traitrpc_transport_tcp::connect(addr).await.unwrap())
            .echo("#".into(), Streaming::iter(words.clone()))
            .await
            .unwrap()
            .map(|s| s.unwrap())
            .collect()
            .await;
    assert_eq!(echoed.len(), words.len());
    assert_eq!(echoed.last().unwrap(), "#4999");

    // Once the last stream ends, the connection closes: the server has none left.
    assert!(common_eventually(|| server.connections() == 0).await);
    server.shutdown().await;
}

/// Waits up to 5 s for `condition`, polling.
async fn common_eventually(mut condition: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}

/// How a flood of empty stream items ended.
#[derive(Debug)]
enum Flooded {
    /// The server answered GO_AWAY with this code after about this many items.
    CutOff { code: u8, sent: usize },
    /// The server stopped reading: the sender's writes stopped going through after this
    /// many items (the connection stays open).
    Stalled { sent: usize },
}

/// A raw client of protocol `version` that starts `Streams.hoard` and sends empty stream
/// items until the server gives up on it or stops reading them.
async fn flood_with_empty_items(addr: std::net::SocketAddr, version: u16) -> Flooded {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use traitrpc_core::protocol::{kind, ClientHello, Frame, ServerHello, Settings, HANDSHAKE_LEN};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let hello = ClientHello {
        version,
        max_frame_size: 1 << 20,
    };
    stream.write_all(&hello.encode()).await.unwrap();
    let mut reply = [0u8; HANDSHAKE_LEN];
    stream.read_exact(&mut reply).await.unwrap();
    let reply = ServerHello::decode(&reply).unwrap();
    assert_eq!((reply.status, reply.version), (0, version));
    if version >= 3 {
        let len = stream.read_u16().await.unwrap();
        let mut block = vec![0u8; len as usize];
        stream.read_exact(&mut block).await.unwrap();
        stream
            .write_all(&Settings::default().encode())
            .await
            .unwrap();
    }
    let mut request = vec![kind::REQUEST, 0];
    request.extend_from_slice(&1u64.to_be_bytes());
    request.extend_from_slice(&0u64.to_be_bytes());
    request.push(7);
    request.extend_from_slice(b"Streams");
    request.push(5);
    request.extend_from_slice(b"hoard");
    request.extend_from_slice(&[0, 0]);
    let (mut read, mut write) = stream.into_split();
    write.write_u32(request.len() as u32).await.unwrap();
    write.write_all(&request).await.unwrap();
    // Empty items (a header, no payload), in batches of 1000.
    let mut item = Vec::new();
    item.extend_from_slice(&10u32.to_be_bytes());
    item.push(kind::STREAM_ITEM);
    item.push(0);
    item.extend_from_slice(&1u64.to_be_bytes());
    let batch: Vec<u8> = item
        .iter()
        .copied()
        .cycle()
        .take(item.len() * 1000)
        .collect();
    let progress = Arc::new(AtomicUsize::new(0));
    let sender = tokio::spawn({
        let progress = Arc::clone(&progress);
        async move {
            let mut sent = 0;
            while sent < 5_000_000 && write.write_all(&batch).await.is_ok() {
                sent += 1000;
                progress.store(sent, Ordering::SeqCst);
            }
            sent
        }
    });
    let go_away = async {
        loop {
            let Ok(len) = read.read_u32().await else {
                panic!("the server closed without a GO_AWAY");
            };
            let mut body = vec![0u8; len as usize];
            read.read_exact(&mut body).await.unwrap();
            if let Ok(Frame::GoAway { code, .. }) = Frame::decode(body.into()) {
                break code;
            }
        }
    };
    // The sender stalls when the server stops reading and the socket buffers fill: no
    // progress for a second (any stall counts; `sent` says how far it got).
    let stalled = async {
        let mut last = usize::MAX;
        let mut still = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = progress.load(Ordering::SeqCst);
            still = if now == last && now > 0 { still + 1 } else { 0 };
            last = now;
            if still >= 10 {
                break now;
            }
        }
    };
    tokio::select! {
        code = go_away => {
            let sent = tokio::time::timeout(Duration::from_secs(10), sender)
                .await
                .expect("the server closed the connection")
                .unwrap();
            Flooded::CutOff { code, sent }
        }
        sent = stalled => {
            sender.abort();
            Flooded::Stalled { sent }
        }
    }
}

#[tokio::test]
async fn empty_stream_items_cannot_grow_a_receivers_queue_without_bound() {
    use traitrpc_core::protocol::go_away;
    let server = traitrpc_transport_tcp::serve_with_config(
        "127.0.0.1:0",
        StreamsServer::new(StreamsImpl::default()),
        // The version 2 flood leaves a connection the server does not read, with a call
        // that hoards forever: shutdown ends it after the grace period.
        traitrpc_core::ServerConfig::default()
            .max_frame_size(64 * 1024)
            .shutdown_grace(Duration::from_millis(200)),
    )
    .await
    .unwrap();
    // Version 3: every item costs its 14 bytes of framing against the 256 KiB window; a
    // sender past its credit breaks flow control and is cut off.
    match flood_with_empty_items(server.local_addr(), 3).await {
        Flooded::CutOff { code, sent } => {
            assert_eq!(code, go_away::PROTOCOL_ERROR);
            assert!(
                sent < 1_000_000,
                "cut off after about 19 thousand items, sent {sent}"
            );
        }
        other => panic!("a version 3 flood is cut off: {other:?}"),
    }
    // Version 2 counts payload bytes only, so its credit never runs out and it cannot be
    // told to stop: the server stops reading the connection once the stream holds as many
    // items as a window allows (about 19 thousand), instead of queueing (or cutting off a
    // peer that follows its version's rules). The sender's writes stop going through.
    match flood_with_empty_items(server.local_addr(), 2).await {
        Flooded::Stalled { sent } => {
            assert!(
                sent < 3_000_000,
                "stalled after the socket buffers filled, sent {sent}"
            )
        }
        other => panic!("a version 2 flood is not read: {other:?}"),
    }
    // The server and other connections are fine.
    let client = StreamsClient::new(
        traitrpc_transport_tcp::connect(server.local_addr())
            .await
            .unwrap(),
    );
    assert_eq!(client.ping(7).await.unwrap(), 7);
    server.shutdown().await;
}

#[tokio::test]
async fn a_version_2_flood_is_not_read_past_a_windows_worth_of_items_with_default_limits() {
    // With the default 16 MiB frame limit the queue's byte bound allowed about 1.2
    // million empty items from a version 2 peer (some 95 MiB of live heap) before it was
    // cut off; the count of queued items is bounded on its own now, for every version.
    let server = traitrpc_transport_tcp::serve_with_config(
        "127.0.0.1:0",
        StreamsServer::new(StreamsImpl::default()),
        traitrpc_core::ServerConfig::default().shutdown_grace(Duration::from_millis(200)),
    )
    .await
    .unwrap();
    match flood_with_empty_items(server.local_addr(), 2).await {
        Flooded::Stalled { sent } => assert!(sent < 3_000_000, "sent {sent}"),
        other => panic!("a version 2 flood is not read: {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_version_2_client_still_streams_under_the_version_2_rules() {
    let server =
        traitrpc_transport_tcp::serve("127.0.0.1:0", StreamsServer::new(StreamsImpl::default()))
            .await
            .unwrap();
    let connection = traitrpc_transport_tcp::connect_with_config(
        server.local_addr(),
        traitrpc_core::ClientConfig::default().max_protocol_version(2),
    )
    .await
    .unwrap();
    assert_eq!(connection.protocol_version(), 2);
    let client = StreamsClient::new(connection);
    all_three_kinds(&client).await;
    let bytes: usize = client
        .bytes(4 << 20, 60_000)
        .await
        .unwrap()
        .map(|c| c.unwrap().len())
        .fold(0, |a, b| async move { a + b })
        .await;
    assert_eq!(bytes, (4 << 20) / 60_000 * 60_000 + 60_000);
    server.shutdown().await;
}

#[tokio::test]
async fn a_larger_stream_window_lets_a_producer_run_further_ahead() {
    // The client grants 4 MiB per stream: the server produces that far ahead of a
    // consumer that does not read, and no further.
    let imp = StreamsImpl::default();
    let counters = Arc::clone(&imp.counters);
    let server = traitrpc_transport_tcp::serve("127.0.0.1:0", StreamsServer::new(imp))
        .await
        .unwrap();
    let client = StreamsClient::new(
        traitrpc_transport_tcp::connect_with_config(
            server.local_addr(),
            traitrpc_core::ClientConfig::default().stream_window(4 << 20),
        )
        .await
        .unwrap(),
    );
    let stalled = client.bytes(64 << 20, 64 << 10).await.unwrap();
    // 4 MiB of 64 KiB chunks is 64; one more may start on the last byte of credit, and
    // one more is produced and waiting for credit.
    assert!(common_eventually(|| counters.produced.load(Ordering::SeqCst) >= 60).await);
    tokio::time::sleep(Duration::from_millis(200)).await; // settle: nothing more comes
    let produced = counters.produced.load(Ordering::SeqCst);
    assert!(
        (60..=67).contains(&produced),
        "{produced} chunks produced ahead"
    );
    drop(stalled);
    server.shutdown().await;
}
