#![deny(deprecated)]

use traitrpc_core::service;

#[service]
trait Svc {
    #[deprecated(note = "call `ping2`")]
    async fn ping(&self) -> u8;
    async fn ping2(&self) -> u8;
}

// A `#[deprecated]` method warns the callers of the generated client method.
async fn caller(client: SvcClient) {
    let _ = client.ping().await;
}

fn main() {
    let _ = caller;
}
