use traitrpc_core::service;

#[service]
trait Svc {
    async fn echo(&self, text: std::borrow::Cow<'_, str>) -> String;
}

fn main() {}
