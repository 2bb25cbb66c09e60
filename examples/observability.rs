//! A chain of two services, watched from outside: `Shop.quote` (server A) calls
//! `Pricing.price` (server B) for each item. Both servers record Prometheus metrics,
//! trace every call with a `tracing` span whose W3C trace context crosses from the
//! caller through A to B, and report health; each has an admin endpoint serving
//! `/metrics`, `/healthz` and `/readyz`.
//!
//! ```text
//! cargo run --example observability              # one traced call, 3 s of load, a summary
//! cargo run --example observability -- --serve   # keep the load running (Ctrl-C stops):
//!                                                # admin endpoints on 127.0.0.1:9464 and :9465
//! ```
//!
//! With `--serve`, point Prometheus at both admin addresses and import
//! `docs/grafana-dashboard.json` into Grafana; `docs/OBSERVABILITY.md` lists every metric.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;
use traitrpc::health::ServingStatus;
use traitrpc::observability::admin::{self, Admin};
use traitrpc::observability::metrics::Metrics;
use traitrpc::observability::tracing_layers::{ClientTracing, ServerTracing};
use traitrpc::{service, Client, Router};

#[service]
pub trait Pricing {
    /// The price of one `item`, in cents (`"slow"` takes 50 ms to price).
    #[idempotent]
    async fn price(&self, item: String) -> u64;
}

#[service]
pub trait Shop {
    /// The price of `count` of `item`, asked of the pricing service.
    async fn quote(&self, item: String, count: u64) -> Result<u64, String>;
}

struct Prices;
impl Pricing for Prices {
    async fn price(&self, item: String) -> u64 {
        if item == "slow" {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        item.len() as u64 * 10
    }
}

/// Server A: its calls to B run inside its handler, so they continue the caller's trace.
struct Front {
    pricing: PricingClient,
}
impl Shop for Front {
    async fn quote(&self, item: String, count: u64) -> Result<u64, String> {
        let each = self.pricing.price(item).await.map_err(|e| e.to_string())?;
        Ok(each * count)
    }
}

/// Whether spans are printed: on for the first, traced call; off under load.
static SHOW_SPANS: AtomicBool = AtomicBool::new(true);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let serve = std::env::args().any(|a| a == "--serve");
    // Print each span as it closes (with its service, method, status and trace ids),
    // while SHOW_SPANS is on (a dynamic filter: asked at every span, not once per site).
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .compact()
                .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
                .with_filter(tracing_subscriber::filter::DynFilterFn::new(|meta, _| {
                    SHOW_SPANS.load(Ordering::Relaxed) && meta.name().starts_with("rpc.")
                })),
        )
        .init();

    // Server B: Pricing.
    let metrics_b = Metrics::new();
    let router_b = Router::from(PricingServer::new(Prices))
        .layer(ServerTracing)
        .observe(metrics_b.server_observer());
    let server_b = traitrpc::serve("127.0.0.1:0", router_b).await?;
    metrics_b.observe_server(server_b.stats());
    let admin_b = admin::serve(
        if serve {
            "127.0.0.1:9465"
        } else {
            "127.0.0.1:0"
        },
        Admin::new()
            .metrics(metrics_b.clone())
            .health(server_b.health()),
    )
    .await?;

    // Server A: Shop, a client of B (its calls traced and measured under target "pricing").
    let metrics_a = Metrics::new();
    let to_b = Client::new(traitrpc::connect(server_b.local_addr()).await?)
        .layer(ClientTracing)
        .observe(metrics_a.client_observer("pricing"));
    let front = Front {
        pricing: PricingClient::from_client(to_b),
    };
    let router_a = Router::from(ShopServer::new(front))
        .layer(ServerTracing)
        .observe(metrics_a.server_observer());
    let server_a = traitrpc::serve("127.0.0.1:0", router_a).await?;
    metrics_a.observe_server(server_a.stats());
    let admin_a = admin::serve(
        if serve {
            "127.0.0.1:9464"
        } else {
            "127.0.0.1:0"
        },
        Admin::new()
            .metrics(metrics_a.clone())
            .health(server_a.health()),
    )
    .await?;
    println!(
        "Shop (A) on {}, admin http://{}; Pricing (B) on {}, admin http://{}",
        server_a.local_addr(),
        admin_a.local_addr(),
        server_b.local_addr(),
        admin_b.local_addr()
    );

    // The caller.
    let shop = ShopClient::from_client(
        Client::new(traitrpc::connect(server_a.local_addr()).await?).layer(ClientTracing),
    );

    println!("\n== one traced call: caller -> A -> B (the three spans share one trace_id)");
    println!("quote(tea, 3) = {:?}", shop.quote("tea".into(), 3).await?);
    SHOW_SPANS.store(false, Ordering::Relaxed);

    let seconds = if serve { u64::MAX } else { 3 };
    println!(
        "\n== load: 32 callers{}",
        if serve {
            " until Ctrl-C".to_string()
        } else {
            format!(" for {seconds} s")
        }
    );
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let callers: Vec<_> = (0..32u64)
        .map(|worker| {
            let (shop, done, stop) = (shop.clone(), Arc::clone(&done), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    // Now and then a call that cannot make its deadline, so the
                    // dashboards have errors to show.
                    let _ = if (n + worker) % 50 == 0 {
                        shop.with_timeout(Duration::from_millis(20))
                            .quote("slow".into(), 1)
                            .await
                    } else {
                        shop.quote("coffee".into(), n % 5).await
                    };
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    if serve {
        tokio::signal::ctrl_c().await?;
    } else {
        tokio::time::sleep(Duration::from_secs(seconds)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await?;
    }
    let calls = done.load(Ordering::Relaxed);
    println!(
        "{calls} calls in {:.1} s ({:.0} calls/s)",
        started.elapsed().as_secs_f64(),
        calls as f64 / started.elapsed().as_secs_f64()
    );

    println!(
        "\n== a scrape of A's /metrics (excerpt: call counts by method and status, endpoints)"
    );
    let scrape = http_get(admin_a.local_addr(), "/metrics").await?;
    for line in scrape.lines().filter(|l| {
        l.starts_with("rpc_server_call_duration_seconds_count")
            || l.starts_with("rpc_client_call_duration_seconds_count")
            || l.starts_with("rpc_server_connections")
    }) {
        println!("  {line}");
    }

    println!("\n== health: B's /readyz, then B marked NOT_SERVING (balancers stop sending)");
    println!(
        "  {}",
        http_get(admin_b.local_addr(), "/readyz").await?.trim()
    );
    server_b.health().set("", ServingStatus::NotServing);
    println!(
        "  {}",
        http_get(admin_b.local_addr(), "/readyz").await?.trim()
    );

    println!(
        "\nWhere to look: curl http://{}/metrics (A) and http://{}/metrics (B); \
         /healthz and /readyz on both;\n  docs/OBSERVABILITY.md (every metric), \
         docs/grafana-dashboard.json (import into Grafana); --serve keeps it running.",
        admin_a.local_addr(),
        admin_b.local_addr()
    );

    server_a.shutdown().await;
    server_b.shutdown().await;
    admin_a.shutdown().await;
    admin_b.shutdown().await;
    Ok(())
}

/// A plain HTTP/1.0 GET on loopback: the status line's code and reason, then the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await?;
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_once(' '))
        .map_or("", |(_, s)| s);
    if path == "/metrics" {
        Ok(body.to_string())
    } else {
        Ok(format!("{path}: {status}: {}", body.trim()))
    }
}
