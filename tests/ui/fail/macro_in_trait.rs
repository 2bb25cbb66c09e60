use traitrpc_core::service;

#[allow(unused_macros)]
macro_rules! methods {
    () => {};
}

#[service]
trait Svc {
    methods!();
    async fn ping(&self) -> u8;
}

fn main() {}
