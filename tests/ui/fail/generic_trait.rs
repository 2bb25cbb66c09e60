use traitrpc_core::service;

#[service]
trait Svc<T> {
    async fn echo(&self, value: T) -> T;
}

fn main() {}
