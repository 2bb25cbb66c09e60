use traitrpc_core::service;

#[service(crate = "traitrpc_core", crate = "traitrpc_core")]
pub trait Calculator {
    async fn add(&self, a: i64, b: i64) -> i64;
}

fn main() {}
