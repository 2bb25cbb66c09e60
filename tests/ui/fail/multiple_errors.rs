use traitrpc_core::service;

// Every problem is reported by one compile, not one per fix.
#[service]
trait Svc {
    fn ping(&self) -> u8;
    async fn greet(&self, name: &str) -> String;
    type Item;
}

fn main() {}
