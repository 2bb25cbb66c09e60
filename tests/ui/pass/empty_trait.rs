#![deny(warnings)]

use traitrpc_core::service;

#[service]
pub trait Empty {}

struct Impl;

impl Empty for Impl {}

fn assert_service<S: traitrpc_core::Service>(_: &S) {}

fn main() {
    let server = EmptyServer::new(Impl);
    assert_service(&server);
    assert_eq!(traitrpc_core::Service::name(&server), "Empty");
    assert!(traitrpc_core::Service::methods(&server).is_empty());
    assert_eq!(EmptyClient::SERVICE_NAME, "Empty");
    // The request and response enums have no variants.
    let _: Option<EmptyRequest> = None;
    let _: Option<EmptyResponse> = None;
}
