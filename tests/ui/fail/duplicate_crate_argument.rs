use rpc_core::service;

#[service(crate = "rpc_core", crate = "rpc_core")]
pub trait Calculator {
    async fn add(&self, a: i64, b: i64) -> i64;
}

fn main() {}
