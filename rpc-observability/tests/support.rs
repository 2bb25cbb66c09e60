//! A small service for the observability tests, and a raw HTTP GET.
#![allow(dead_code)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use traitrpc_core::Streaming;

#[traitrpc_core::service]
pub trait Shop {
    async fn price(&self, item: String) -> u64;
    async fn buy(&self, item: String, count: u32) -> Result<u64, String>;
    async fn slow(&self, ms: u64) -> u64;
    async fn catalogue(&self, n: u32) -> Streaming<String>;
}

#[derive(Clone, Default)]
pub struct ShopImpl;

impl Shop for ShopImpl {
    async fn price(&self, item: String) -> u64 {
        item.len() as u64 * 10
    }
    async fn buy(&self, item: String, count: u32) -> Result<u64, String> {
        if count == 0 {
            Err(format!("cannot buy zero {item}"))
        } else {
            Ok(u64::from(count) * 10)
        }
    }
    async fn slow(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
    async fn catalogue(&self, n: u32) -> Streaming<String> {
        Streaming::iter((0..n).map(|i| format!("item {i}")))
    }
}

/// `GET path` on `addr` over a raw socket: the status code and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    // Chunked or not: the tests only look for lines in it.
    (status, body)
}
