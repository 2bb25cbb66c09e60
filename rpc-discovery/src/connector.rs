//! [`Connector`]: how a [`BalancedChannel`](crate::BalancedChannel) reaches an endpoint.
//! [`TcpConnector`] (the default), [`TlsConnector`] (TLS and mutual TLS, feature `tls`)
//! and [`UnixConnector`] (Unix domain sockets) come with the crate; any transport that
//! ends in an `traitrpc_core::Connection` can be one.

use std::future::Future;
use std::pin::Pin;

use traitrpc_core::{ClientConfig, Connection, RpcError};

use crate::endpoint::Endpoint;

/// The future a [`Connector`] returns.
pub type ConnectFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Connection, RpcError>> + Send + 'a>>;

/// Opens a connection to one endpoint. The pool calls it in the background, bounded by
/// `config`'s connect timeout, and again with backoff after a failure.
pub trait Connector: Send + Sync + 'static {
    /// Connects to `endpoint` with `config`.
    fn connect<'a>(&'a self, endpoint: &'a Endpoint, config: &'a ClientConfig)
        -> ConnectFuture<'a>;

    /// A short name for logs.
    fn name(&self) -> &'static str;
}

/// Plain TCP to `endpoint.addr` (`host:port`).
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    fn connect<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        config: &'a ClientConfig,
    ) -> ConnectFuture<'a> {
        Box::pin(traitrpc_transport_tcp::connect_with_config(
            endpoint.addr.as_str(),
            config.clone(),
        ))
    }

    fn name(&self) -> &'static str {
        "tcp"
    }
}

/// Unix domain sockets: `endpoint.addr` is the socket's path (a leading `unix:` is
/// dropped).
#[cfg(unix)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UnixConnector;

#[cfg(unix)]
impl Connector for UnixConnector {
    fn connect<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        config: &'a ClientConfig,
    ) -> ConnectFuture<'a> {
        let path = endpoint
            .addr
            .strip_prefix("unix:")
            .unwrap_or(&endpoint.addr);
        Box::pin(traitrpc_transport_tcp::unix::connect_with_config(
            path,
            config.clone(),
        ))
    }

    fn name(&self) -> &'static str {
        "unix"
    }
}

/// The endpoint metadata key a [`TlsConnector`] reads the server's name from, when the
/// connector was given none (discovery can then carry one name per endpoint).
pub const TLS_SERVER_NAME: &str = "tls_server_name";

/// TLS (and mutual TLS, if the configuration has a client identity) over TCP. The
/// server's certificate must match a name: the connector's own
/// ([`TlsConnector::with_server_name`]), else the endpoint's [`TLS_SERVER_NAME`]
/// metadata, else the host part of its address.
#[cfg(feature = "tls")]
#[derive(Debug, Clone)]
pub struct TlsConnector {
    tls: traitrpc_transport_tcp::tls::TlsClientConfig,
    server_name: Option<String>,
}

#[cfg(feature = "tls")]
impl TlsConnector {
    /// TLS with `tls`'s trust roots (and client identity, for mutual TLS).
    pub fn new(tls: traitrpc_transport_tcp::tls::TlsClientConfig) -> Self {
        TlsConnector {
            tls,
            server_name: None,
        }
    }

    /// Every endpoint's certificate must name `name` (one name for the whole service).
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    fn server_name<'a>(&'a self, endpoint: &'a Endpoint) -> &'a str {
        if let Some(name) = &self.server_name {
            return name;
        }
        if let Some(name) = endpoint.metadata.get(TLS_SERVER_NAME) {
            return name;
        }
        host_of(&endpoint.addr)
    }
}

#[cfg(feature = "tls")]
impl Connector for TlsConnector {
    fn connect<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        config: &'a ClientConfig,
    ) -> ConnectFuture<'a> {
        Box::pin(traitrpc_transport_tcp::tls::connect_with_config(
            endpoint.addr.as_str(),
            self.server_name(endpoint),
            self.tls.clone(),
            config.clone(),
        ))
    }

    fn name(&self) -> &'static str {
        "tls"
    }
}

/// The host of `host:port` or `[v6]:port`.
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match addr.rsplit_once(':') {
        Some((host, _)) => host,
        None => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(host_of("db.example.com:7000"), "db.example.com");
        assert_eq!(host_of("127.0.0.1:7000"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7000"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }
}
