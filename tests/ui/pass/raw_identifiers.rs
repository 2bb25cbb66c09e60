#![deny(warnings)]

mod keywords {
    #![allow(non_camel_case_types)]

    use traitrpc_core::service;

    // A trait named by a raw identifier: the generated items drop the `r#`.
    #[service]
    pub trait r#try {
        async fn r#type(&self, r#match: u8) -> u8;
        async fn r#loop(&self, r#in: String, r#ref: Vec<u8>) -> (String, Vec<u8>);
    }

    pub struct Impl;

    impl r#try for Impl {
        async fn r#type(&self, r#match: u8) -> u8 {
            r#match + 1
        }

        async fn r#loop(&self, r#in: String, r#ref: Vec<u8>) -> (String, Vec<u8>) {
            (r#in, r#ref)
        }
    }
}

use keywords::{tryClient, tryRequest, tryResponse, tryServer, Impl};

fn main() {
    assert_eq!(tryClient::SERVICE_NAME, "try");
    let request = tryRequest::Type { r#match: 41 };
    assert_eq!(request.method_name(), "type");
    let server = tryServer::new(Impl);
    match futures::executor::block_on(server.handle(request)) {
        tryResponse::Type(answer) => assert_eq!(answer, 42),
        _ => panic!("wrong response variant"),
    }
    let request = tryRequest::Loop {
        r#in: "a".into(),
        r#ref: vec![1],
    };
    assert_eq!(request.method_name(), "loop");
    assert_eq!(traitrpc_core::Service::methods(&server), ["type", "loop"]);
}
