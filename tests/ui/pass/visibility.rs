#![deny(warnings)]

mod private {
    use traitrpc_core::service;

    // The generated items take the trait's visibility.
    #[service]
    pub(crate) trait Internal {
        async fn ping(&self) -> u8;
    }

    pub(crate) struct Impl;

    impl Internal for Impl {
        async fn ping(&self) -> u8 {
            1
        }
    }

    // A private trait's items stay private to the module (used here).
    #[service]
    trait Hidden {
        async fn hidden(&self);
    }

    struct HiddenImpl;

    impl Hidden for HiddenImpl {
        async fn hidden(&self) {}
    }

    pub(crate) fn hidden_name() -> &'static str {
        let _ = HiddenServer::new(HiddenImpl);
        let _: Option<(HiddenClient, HiddenRequest, HiddenResponse)> = None;
        HiddenClient::SERVICE_NAME
    }
}

use private::{Impl, Internal, InternalClient, InternalRequest, InternalResponse, InternalServer};

fn main() {
    assert_eq!(InternalClient::SERVICE_NAME, "Internal");
    assert_eq!(private::hidden_name(), "Hidden");
    let server = InternalServer::new(Impl);
    futures::executor::block_on(async {
        assert_eq!(Impl.ping().await, 1);
        match server.handle(InternalRequest::Ping {}).await {
            InternalResponse::Ping(1) => {}
            InternalResponse::Ping(_) => panic!("wrong response"),
        }
    });
}
