use traitrpc_core::service;

#[service]
trait Svc
where
    Self: Sized,
{
    async fn ping(&self) -> u8;
}

fn main() {}
