#![deny(warnings)]

use traitrpc_core::service;

#[service]
pub trait Svc {
    async fn base(&self) -> u8;

    /// A default body with no `self`.
    async fn constant(&self) -> u8 {
        1
    }

    /// A default body that awaits another method of the trait, uses its arguments, and
    /// returns early.
    async fn derived(&self, add: u8) -> u8 {
        if add == 0 {
            return 0;
        }
        self.base().await + add
    }

    /// A default body using `?`.
    async fn parse(&self, text: String) -> Result<u8, String> {
        let value = text.parse::<u8>().map_err(|e| e.to_string())?;
        Ok(value)
    }
}

struct Impl;

impl Svc for Impl {
    async fn base(&self) -> u8 {
        10
    }
}

// An implementation may override a default.
struct Override;

impl Svc for Override {
    async fn base(&self) -> u8 {
        0
    }

    async fn constant(&self) -> u8 {
        7
    }
}

fn main() {
    futures::executor::block_on(async {
        assert_eq!(Impl.constant().await, 1);
        assert_eq!(Impl.derived(5).await, 15);
        assert_eq!(Impl.derived(0).await, 0);
        assert_eq!(Impl.parse("9".into()).await, Ok(9));
        assert!(Impl.parse("x".into()).await.is_err());
        assert_eq!(Override.constant().await, 7);
        match SvcServer::new(Impl)
            .handle(SvcRequest::Derived { add: 1 })
            .await
        {
            SvcResponse::Derived(value) => assert_eq!(value, 11),
            _ => panic!("wrong response"),
        }
    });
}
