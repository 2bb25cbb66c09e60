use traitrpc_core::service;

#[service]
trait Svc {
    fn ping(&self) -> u8;
}

fn main() {}
