//! A replica server for traitrpc-discovery's integration tests and examples, run as a real
//! process. Not part of the library's API.
//!
//! ```text
//! discovery-test-server --name NAME [--listen 127.0.0.1:0] [--log FILE] [--grace-ms MS]
//!                       [--max-in-flight N]
//!                       [--etcd http://127.0.0.1:2379 --service SERVICE --ttl SECONDS]
//! ```
//!
//! Prints `listening ADDR`, then `registered` once registered in etcd. A line `stop` on
//! standard input, or its end, shuts it down gracefully: deregister first, then drain.
//! Then it prints `stopped` and exits.

mod service;

use std::io::BufRead;
use std::time::Duration;

use service::{ReplicaImpl, ReplicaServer};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = arg(&args, "--name").unwrap_or_else(|| "replica".into());
    let listen = arg(&args, "--listen").unwrap_or_else(|| "127.0.0.1:0".into());
    let mut replica = ReplicaImpl::new(&name);
    if let Some(path) = arg(&args, "--log") {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open --log file");
        replica.log = Some(std::sync::Arc::new(std::sync::Mutex::new(file)));
    }
    let grace = Duration::from_millis(
        arg(&args, "--grace-ms").map_or(5000, |g| g.parse().expect("--grace-ms MS")),
    );
    let mut config = traitrpc_core::ServerConfig::default().shutdown_grace(grace);
    if let Some(limit) = arg(&args, "--max-in-flight") {
        config = config.max_in_flight_per_connection(limit.parse().expect("--max-in-flight N"));
    }
    let server = traitrpc_transport_tcp::serve_with_config(
        listen.as_str(),
        ReplicaServer::new(replica),
        config,
    )
    .await
    .expect("bind");
    println!("listening {}", server.local_addr());

    #[cfg(feature = "etcd")]
    let registration = match arg(&args, "--etcd") {
        Some(endpoint) => {
            use traitrpc_discovery::etcd;
            let service = arg(&args, "--service").unwrap_or_else(|| "replica".into());
            let ttl: u64 = arg(&args, "--ttl").map_or(10, |t| t.parse().expect("--ttl SECONDS"));
            let client = etcd::EtcdClient::connect([endpoint])
                .await
                .expect("connect to etcd");
            let registration = etcd::register(
                &client,
                &service,
                server.local_addr(),
                etcd::RegisterOptions::new().ttl(Duration::from_secs(ttl)),
            )
            .await
            .expect("register in etcd");
            println!("registered");
            Some(registration)
        }
        None => None,
    };
    #[cfg(not(feature = "etcd"))]
    if arg(&args, "--etcd").is_some() {
        panic!("built without the `etcd` feature");
    }

    // Wait for `stop` or the end of standard input on a plain thread.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(line) if line.trim() == "stop" => break,
                Ok(_) => continue,
                Err(_) => break,
            }
        }
        let _ = stop_tx.send(());
    });
    let _ = stop_rx.await;

    #[cfg(feature = "etcd")]
    if let Some(registration) = registration {
        if let Err(error) = registration.deregister().await {
            eprintln!("deregistration failed: {error}");
        }
    }
    server.shutdown().await;
    println!("stopped");
}
