use traitrpc_core::service;

#[service]
trait Svc {
    async fn echo<T>(&self, value: T) -> T;
}

fn main() {}
