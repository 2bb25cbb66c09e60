use traitrpc_core::service;

#[service]
trait Archive {
    #[compress(fast)]
    async fn get(&self, key: u32) -> Vec<u8>;

    #[compress = true]
    async fn peek(&self, key: u32) -> Vec<u8>;

    #[compress]
    #[compress(false)]
    async fn put(&self, key: u32) -> bool;
}

fn main() {}
