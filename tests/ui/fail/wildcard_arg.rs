use traitrpc_core::service;

#[service]
trait Svc {
    async fn ignore(&self, _: u8);
}

fn main() {}
