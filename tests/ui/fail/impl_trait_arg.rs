use traitrpc_core::service;

#[service]
trait Svc {
    async fn show(&self, value: impl std::fmt::Display) -> String;
}

fn main() {}
