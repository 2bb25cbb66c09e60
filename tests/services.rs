//! Several services on one port, and how method identity survives a server upgrade.

mod common;

use common::{ProbeClient, ProbeImpl, ProbeServer};
use traitrpc_core::{service, Router, RpcError};

#[service]
pub trait Counter {
    async fn double(&self, x: u32) -> u32;
}

struct CounterImpl;
impl Counter for CounterImpl {
    async fn double(&self, x: u32) -> u32 {
        x * 2
    }
}

#[tokio::test]
async fn two_services_share_one_port_and_one_connection() {
    let router = Router::new()
        .add_service(ProbeServer::new(ProbeImpl::default()))
        .unwrap()
        .add_service(CounterServer::new(CounterImpl))
        .unwrap();
    let server = traitrpc_transport_tcp::serve("127.0.0.1:0", router)
        .await
        .unwrap();
    let conn = traitrpc_transport_tcp::connect(server.local_addr())
        .await
        .unwrap();
    let probe = ProbeClient::new(conn.clone());
    let counter = CounterClient::new(conn);
    let (a, b) = tokio::join!(probe.echo(5), counter.double(21));
    assert_eq!((a.unwrap(), b.unwrap()), (5, 42));
    server.shutdown().await;
}

#[tokio::test]
async fn calling_a_service_the_server_lacks_is_a_typed_error() {
    let server = traitrpc_transport_tcp::serve("127.0.0.1:0", CounterServer::new(CounterImpl))
        .await
        .unwrap();
    let conn = traitrpc_transport_tcp::connect(server.local_addr())
        .await
        .unwrap();
    let probe = ProbeClient::new(conn.clone());
    assert_eq!(
        probe.echo(1).await.unwrap_err(),
        RpcError::UnknownService {
            service: "Probe".into()
        }
    );
    assert_eq!(CounterClient::new(conn).double(2).await.unwrap(), 4);
    server.shutdown().await;
}

/// Version 1 of a service, as an old client was built.
mod v1 {
    #[traitrpc_core::service(name = "Inventory")]
    pub trait Inventory {
        async fn count(&self, item: String) -> u32;
        async fn remove(&self, item: String) -> bool;
    }
}

/// Version 2: a method added at the front, the old ones reordered.
mod v2 {
    #[traitrpc_core::service(name = "Inventory")]
    pub trait Inventory {
        async fn add(&self, item: String, count: u32) -> u32;
        async fn remove(&self, item: String) -> bool;
        async fn count(&self, item: String) -> u32;
    }

    pub struct Store;
    impl Inventory for Store {
        async fn add(&self, _item: String, count: u32) -> u32 {
            count
        }
        async fn remove(&self, item: String) -> bool {
            item == "apple"
        }
        async fn count(&self, item: String) -> u32 {
            item.len() as u32
        }
    }
}

#[tokio::test]
async fn adding_and_reordering_methods_keeps_old_clients_working() {
    let server = traitrpc_transport_tcp::serve("127.0.0.1:0", v2::InventoryServer::new(v2::Store))
        .await
        .unwrap();
    let conn = traitrpc_transport_tcp::connect(server.local_addr())
        .await
        .unwrap();
    let old = v1::InventoryClient::new(conn.clone());
    assert_eq!(old.count("pear".into()).await.unwrap(), 4);
    assert!(old.remove("apple".into()).await.unwrap());
    let new = v2::InventoryClient::new(conn);
    assert_eq!(new.add("fig".into(), 3).await.unwrap(), 3);
    server.shutdown().await;
}

/// A v1 server.
struct OldStore;
impl v1::Inventory for OldStore {
    async fn count(&self, _item: String) -> u32 {
        1
    }
    async fn remove(&self, _item: String) -> bool {
        false
    }
}

#[tokio::test]
async fn a_new_method_on_an_old_server_is_a_typed_unknown_method_error() {
    let server = traitrpc_transport_tcp::serve("127.0.0.1:0", v1::InventoryServer::new(OldStore))
        .await
        .unwrap();
    let new = v2::InventoryClient::new(
        traitrpc_transport_tcp::connect(server.local_addr())
            .await
            .unwrap(),
    );
    assert_eq!(
        new.add("fig".into(), 1).await.unwrap_err(),
        RpcError::UnknownMethod {
            service: "Inventory".into(),
            method: "add".into()
        }
    );
    assert_eq!(new.count("x".into()).await.unwrap(), 1);
    server.shutdown().await;
}

#[service(name = "Inventory")]
pub trait WrongTypes {
    async fn count(&self, item: u64, extra: u64) -> u32;
}

#[tokio::test]
async fn arguments_of_the_wrong_types_are_a_typed_error() {
    let server = traitrpc_transport_tcp::serve("127.0.0.1:0", v2::InventoryServer::new(v2::Store))
        .await
        .unwrap();
    // Protocol version 5 cannot tell: the bincode bytes fail to decode.
    let old = traitrpc_transport_tcp::connect_with_config(
        server.local_addr(),
        traitrpc_core::ClientConfig::default().max_protocol_version(5),
    )
    .await
    .unwrap();
    let error = WrongTypesClient::new(old)
        .count(u64::MAX, 1)
        .await
        .unwrap_err();
    // The server's refusal, not a local decode failure: it did not run.
    assert!(
        matches!(error, RpcError::InvalidArguments { .. }),
        "{error:?}"
    );
    assert_eq!(error.outcome(), traitrpc_core::CallOutcome::NotStarted);
    // Version 6 knows the schemas differ and sends the call by name: the server names
    // what does not fit.
    let conn = traitrpc_transport_tcp::connect(server.local_addr())
        .await
        .unwrap();
    let wrong = WrongTypesClient::new(conn.clone());
    let error = wrong.count(u64::MAX, 1).await.unwrap_err();
    let RpcError::SchemaMismatch { message, .. } = &error else {
        panic!("{error:?}")
    };
    assert!(message.contains("parameter `item`"), "{message}");
    assert_eq!(error.outcome(), traitrpc_core::CallOutcome::NotStarted);
    assert_eq!(
        v2::InventoryClient::new(conn)
            .count("ab".into())
            .await
            .unwrap(),
        2
    );
    server.shutdown().await;
}

#[test]
fn two_services_with_one_name_are_a_typed_error_not_a_panic() {
    let error = Router::new()
        .add_service(v2::InventoryServer::new(v2::Store))
        .unwrap()
        .add_service(v1::InventoryServer::new(OldStore))
        .unwrap_err();
    assert_eq!(error.name, "Inventory");
    assert!(error.to_string().contains("already added"), "{error}");
}

/// The same service declared with `Vec<u8>` (fast path chosen by the macro) and with
/// `ByteBuf`: the bytes on the wire are identical, so either side can use either.
mod bytes_as_vec {
    #[traitrpc_core::service(name = "Blobs")]
    pub trait Blobs {
        async fn reverse(&self, data: Vec<u8>, tag: u8) -> Vec<u8>;
        async fn checked(&self, data: Vec<u8>) -> Result<Vec<u8>, String>;
    }

    pub struct Impl;
    impl Blobs for Impl {
        async fn reverse(&self, mut data: Vec<u8>, tag: u8) -> Vec<u8> {
            data.reverse();
            data.push(tag);
            data
        }
        async fn checked(&self, data: Vec<u8>) -> Result<Vec<u8>, String> {
            if data.is_empty() {
                Err("empty".into())
            } else {
                Ok(data)
            }
        }
    }
}

mod bytes_as_bytebuf {
    use traitrpc_core::ByteBuf;

    // Only its client is used here.
    #[allow(dead_code)]
    #[traitrpc_core::service(name = "Blobs")]
    pub trait Blobs {
        async fn reverse(&self, data: ByteBuf, tag: u8) -> ByteBuf;
        async fn checked(&self, data: ByteBuf) -> Result<ByteBuf, String>;
    }
}

#[tokio::test]
async fn vec_u8_and_bytebuf_are_the_same_on_the_wire() {
    let server = traitrpc_transport_tcp::serve(
        "127.0.0.1:0",
        bytes_as_vec::BlobsServer::new(bytes_as_vec::Impl),
    )
    .await
    .unwrap();
    let conn = traitrpc_transport_tcp::connect(server.local_addr())
        .await
        .unwrap();
    let as_vec = bytes_as_vec::BlobsClient::new(conn.clone());
    assert_eq!(
        as_vec.reverse(vec![1, 2, 3], 9).await.unwrap(),
        vec![3, 2, 1, 9]
    );
    assert_eq!(as_vec.checked(vec![5]).await.unwrap(), vec![5]);
    assert!(matches!(
        as_vec.checked(vec![]).await,
        Err(traitrpc_core::CallError::Application(e)) if e == "empty"
    ));
    let as_buf = bytes_as_bytebuf::BlobsClient::new(conn);
    let back = as_buf
        .reverse(traitrpc_core::ByteBuf::from(vec![1, 2]), 7)
        .await
        .unwrap();
    assert_eq!(back.into_vec(), vec![2, 1, 7]);
    server.shutdown().await;
}
