// An error type that cannot travel (std::io::Error has no serde impls): the error points
// at it and suggests an error enum of one's own, or a String.
use traitrpc_core::service;

#[service]
pub trait Files {
    async fn read(&self, name: String) -> Result<String, std::io::Error>;
}

fn main() {}
