//! The test shop (`tests/support/shop.rs`) behind a gateway, for trying clients by hand:
//!
//! ```text
//! cargo run -p traitrpc-gateway --example shop -- 127.0.0.1:8080 [--proto DIR]
//! ```
//!
//! prints `listening on http://ADDR` once it serves; with `--proto DIR` it first writes
//! the exported `.proto` files there.

#[path = "../tests/support/shop.rs"]
mod shop;

use shop::{OrdersServer, Shop};
use traitrpc_core::Router;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args
        .first()
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let router = Router::from(OrdersServer::new(Shop));
    if let Some(i) = args.iter().position(|a| a == "--proto") {
        let dir = std::path::PathBuf::from(&args[i + 1]);
        std::fs::create_dir_all(&dir)?;
        let codec = traitrpc_proto::ProtoCodec::for_router(&router)?;
        for (name, text) in codec.proto_files() {
            std::fs::write(dir.join(name), text)?;
        }
    }
    let gateway = traitrpc_gateway::serve(&addr, router, Default::default()).await?;
    println!("listening on http://{}", gateway.local_addr());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
