#![deny(warnings)]

use traitrpc_core::service;

/// A documented service.
///
/// Its documentation stays on the trait.
#[service]
#[allow(dead_code)]
pub trait Documented: Send + Sync + 'static {
    /// Documented method: the docs are carried to `DocumentedClient::documented`.
    #[allow(unused)]
    async fn documented(&self, value: u32) -> u32;

    #[doc = "An explicit doc attribute."]
    #[allow(clippy::unused_async)]
    async fn explicit(&self);
}

struct Impl;

impl Documented for Impl {
    async fn documented(&self, value: u32) -> u32 {
        value
    }

    async fn explicit(&self) {}
}

fn main() {
    let _ = DocumentedServer::new(Impl);
}
