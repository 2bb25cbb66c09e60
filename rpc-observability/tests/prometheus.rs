//! A real Prometheus server (the `prometheus` binary, installed by `.ci/run`) scrapes the
//! admin endpoint of a server under load; the test then asks Prometheus's HTTP API for
//! the call counter and the latency histogram and checks their labels.
//!
//! It is `#[ignore]`d with the reason, so a plain `cargo test` lists it as ignored;
//! `-- --include-ignored` runs it, and then a missing `prometheus` binary fails it.

#[path = "support.rs"]
mod support;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::{http_get, ShopClient, ShopImpl, ShopServer};
use traitrpc_core::{Client, Router};
use traitrpc_observability::admin::{self, Admin};
use traitrpc_observability::metrics::Metrics;

/// How long Prometheus may take to start and scrape twice before the test fails.
const PATIENCE: Duration = Duration::from_secs(90);

fn prometheus_binary() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("prometheus"))
        .find(|candidate| candidate.is_file())
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Percent-encodes a PromQL query for a URL.
fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The result vector of an instant query, `[]` while Prometheus has no such series (or is
/// not up yet).
async fn query(prometheus: SocketAddr, promql: &str) -> Vec<Value> {
    let path = format!("/api/v1/query?query={}", encode(promql));
    let (status, body) =
        match tokio::time::timeout(Duration::from_secs(5), try_http_get(prometheus, &path)).await {
            Ok(Some(answer)) => answer,
            _ => return Vec::new(),
        };
    if status != 200 {
        return Vec::new();
    }
    // The body may be chunked: the JSON object is between the first `{` and the last `}`.
    let (Some(start), Some(end)) = (body.find('{'), body.rfind('}')) else {
        return Vec::new();
    };
    let json: Value = serde_json::from_str(&body[start..=end]).expect("Prometheus answers JSON");
    assert_eq!(json["status"], "success", "{json}");
    json["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// `http_get`, but `None` while nothing listens yet.
async fn try_http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    tokio::net::TcpStream::connect(addr).await.ok()?;
    Some(http_get(addr, path).await)
}

/// Polls `promql` until it has a series or `PATIENCE` runs out. Prometheus is another
/// process that scrapes on its own clock: asking again is the only signal it offers.
async fn wait_for_series(
    prometheus: SocketAddr,
    promql: &str,
    child: &mut tokio::process::Child,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let result = query(prometheus, promql).await;
        if !result.is_empty() {
            return result;
        }
        if let Some(exit) = child.try_wait().unwrap() {
            panic!("prometheus exited early: {exit}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no series for {promql} within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
#[ignore = "needs prometheus: `source .ci/tools.sh` (or apt-get install prometheus), then --include-ignored"]
async fn a_real_prometheus_scrapes_call_counters_and_latency_histograms() {
    let binary = prometheus_binary()
        .expect("no `prometheus` on PATH: `source .ci/tools.sh` (or apt-get install prometheus)");

    // A server with metrics and its admin endpoint.
    let metrics = Metrics::new();
    let router = Router::from(ShopServer::new(ShopImpl)).observe(metrics.server_observer());
    let server = traitrpc_transport_tcp::serve("127.0.0.1:0", router)
        .await
        .unwrap();
    metrics.observe_server(server.stats());
    let admin = admin::serve(
        "127.0.0.1:0",
        Admin::new()
            .metrics(metrics.clone())
            .health(server.health()),
    )
    .await
    .unwrap();

    // Load: 8 callers, successes and application errors, until the test has its answer.
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let connection = traitrpc_transport_tcp::connect(server.local_addr())
        .await
        .unwrap();
    let shop =
        ShopClient::from_client(Client::new(connection).observe(metrics.client_observer("shop")));
    let mut load = Vec::new();
    for caller in 0..8u32 {
        let (shop, stop, calls) = (shop.clone(), Arc::clone(&stop), Arc::clone(&calls));
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if caller == 0 {
                    assert!(shop.buy("tea".into(), 0).await.is_err());
                } else {
                    assert_eq!(shop.price("tea".into()).await.unwrap(), 30);
                }
                calls.fetch_add(1, Ordering::Relaxed);
                // Leave the runtime to the admin endpoint and the scrapes now and then.
                tokio::task::yield_now().await;
            }
        }));
    }

    // Prometheus, scraping the admin endpoint every second.
    let dir = std::env::temp_dir().join(format!("traitrpc-prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: traitrpc\n    static_configs:\n      - targets: ['{}']\n",
            admin.local_addr()
        ),
    )
    .unwrap();
    let web = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let mut child = tokio::process::Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus starts");

    let up = wait_for_series(web, r#"up{job="traitrpc"} == 1"#, &mut child).await;
    assert_eq!(up.len(), 1, "{up:?}");

    // The call counter, by service, method and nothing unbounded.
    let started = wait_for_series(
        web,
        r#"rpc_server_call_started_total{job="traitrpc",service="Shop",method="price"} > 0"#,
        &mut child,
    )
    .await;
    assert_eq!(started.len(), 1, "{started:?}");
    let labels = started[0]["metric"].as_object().unwrap();
    let mut names: Vec<&str> = labels.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["__name__", "instance", "job", "method", "service"]);

    // The latency histogram, by status: successes and application errors apart.
    let ok = wait_for_series(
        web,
        r#"rpc_server_call_duration_seconds_count{service="Shop",method="price",status="OK"} > 0"#,
        &mut child,
    )
    .await;
    assert_eq!(ok.len(), 1, "{ok:?}");
    let errors = wait_for_series(
        web,
        r#"rpc_server_call_duration_seconds_count{service="Shop",method="buy",status="APPLICATION_ERROR"} > 0"#,
        &mut child,
    )
    .await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    // Its buckets arrived too: a 99th percentile over them is a number of seconds.
    let p99 = wait_for_series(
        web,
        r#"histogram_quantile(0.99, sum by (le) (rpc_server_call_duration_seconds_bucket{method="price"}))"#,
        &mut child,
    )
    .await;
    let seconds: f64 = p99[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(seconds.is_finite() && seconds > 0.0, "p99 = {seconds}");
    // And the client side of the same calls.
    let client = wait_for_series(
        web,
        r#"rpc_client_call_duration_seconds_count{target="shop",method="price",status="OK"} > 0"#,
        &mut child,
    )
    .await;
    assert_eq!(client.len(), 1, "{client:?}");

    stop.store(true, Ordering::Relaxed);
    for caller in load {
        caller.await.unwrap();
    }
    assert!(calls.load(Ordering::Relaxed) > 0);
    child.kill().await.unwrap();
    admin.shutdown().await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
