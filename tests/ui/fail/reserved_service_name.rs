use traitrpc_core::service;

#[service]
trait Svc {
    #[allow(non_snake_case)]
    async fn SERVICE_NAME(&self) -> String;
}

fn main() {}
