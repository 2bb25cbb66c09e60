use traitrpc_core::service;

#[service]
trait Store {
    #[idempotent(x)]
    async fn get(&self, key: u32) -> bool;

    #[idempotent = true]
    async fn peek(&self, key: u32) -> bool;

    #[idempotent]
    #[idempotent]
    async fn put(&self, key: u32) -> bool;
}

fn main() {}
