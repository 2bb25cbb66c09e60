use traitrpc_core::service;

#[service(name = "a.Svc", name = "b.Svc")]
trait Svc {
    async fn ping(&self) -> u8;
}

fn main() {}
