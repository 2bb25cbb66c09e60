#![deny(warnings)]

use traitrpc_core::service;

#[service]
pub trait Store {
    /// Reads a value: safe to run twice.
    #[idempotent]
    async fn get(&self, key: u32) -> bool;

    /// Not marked: a retry after an unknown outcome is not safe.
    async fn put(&self, key: u32) -> bool;
}

struct Impl;

/// Each handler reports whether its request carried the IDEMPOTENT flag.
impl Store for Impl {
    async fn get(&self, _key: u32) -> bool {
        traitrpc_core::context::current().unwrap().is_idempotent()
    }

    async fn put(&self, _key: u32) -> bool {
        traitrpc_core::context::current().unwrap().is_idempotent()
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (listener, connector) = traitrpc_core::memory::listener();
        let server = traitrpc_core::Server::new(StoreServer::new(Impl)).serve(listener, ());
        let store = StoreClient::new(connector.connect().await.unwrap());
        assert!(store.get(1).await.unwrap(), "#[idempotent] sets the flag");
        assert!(!store.put(1).await.unwrap(), "unmarked methods do not");
        server.shutdown().await;
    });
}
