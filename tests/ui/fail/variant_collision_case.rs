use traitrpc_core::service;

#[service]
trait Svc {
    async fn foo_bar(&self) -> u8;
    #[allow(non_snake_case)]
    async fn fooBar(&self) -> u8;
}

fn main() {}
