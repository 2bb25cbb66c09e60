//! Keeps `docs/grafana-dashboard.json` true to the metrics: the dashboard must parse, have
//! unique panel ids and a Prometheus data source variable, and every `rpc_*` metric its
//! queries and template variables name must be a series `Metrics::encode` exports after
//! real calls. A renamed or misspelt metric fails here, not as an empty panel in Grafana.

#[path = "support.rs"]
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use support::{ShopClient, ShopImpl, ShopServer};
use traitrpc_core::{Client, Router};
use traitrpc_discovery::{BalancedChannel, StaticDiscovery};
use traitrpc_observability::metrics::Metrics;

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../docs/grafana-dashboard.json"
);

/// Every panel, rows and the panels nested in (collapsed) rows included.
fn panels(list: &Value, out: &mut Vec<Value>) {
    for panel in list.as_array().into_iter().flatten() {
        out.push(panel.clone());
        if let Some(nested) = panel.get("panels") {
            panels(nested, out);
        }
    }
}

/// Every `rpc_[a-z0-9_]+` name in `text` that starts a word.
fn metric_names(text: &str, out: &mut BTreeSet<String>) {
    let bytes = text.as_bytes();
    let is_name = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
    let mut i = 0;
    while let Some(at) = text[i..].find("rpc_") {
        let start = i + at;
        let mut end = start + "rpc_".len();
        while end < bytes.len() && is_name(bytes[end]) {
            end += 1;
        }
        let starts_word = start == 0 || !(is_name(bytes[start - 1]) || bytes[start - 1] == b':');
        if starts_word && end > start + "rpc_".len() {
            out.insert(text[start..end].to_string());
        }
        i = end;
    }
}

/// A string, or the `query` string of a variable query object.
fn query_text(value: &Value) -> Option<&str> {
    value
        .as_str()
        .or_else(|| value.get("query").and_then(Value::as_str))
}

/// Records calls of every kind on a server, a plain client and a balanced channel, so
/// each family (counters, gauges, histograms, channel metrics) has samples.
async fn metrics_with_samples() -> Metrics {
    let metrics = Metrics::new();
    let router = Router::from(ShopServer::new(ShopImpl)).observe(metrics.server_observer());
    let server = traitrpc_transport_tcp::serve("127.0.0.1:0", router)
        .await
        .unwrap();
    metrics.observe_server(server.stats());

    let connection = traitrpc_transport_tcp::connect(server.local_addr())
        .await
        .unwrap();
    let shop =
        ShopClient::from_client(Client::new(connection).observe(metrics.client_observer("shop")));
    assert_eq!(shop.price("tea".into()).await.unwrap(), 30);
    assert!(shop.buy("tea".into(), 0).await.is_err());
    let items: Vec<_> = shop.catalogue(3).await.unwrap().collect().await;
    assert_eq!(items.len(), 3);

    let channel = BalancedChannel::builder(StaticDiscovery::new([server.local_addr()]))
        .attempt_layer(metrics.attempt_layer("shop"))
        .build();
    metrics.observe_channel(&channel, "shop");
    let balanced = ShopClient::new(channel);
    tokio::time::timeout(Duration::from_secs(30), async {
        while balanced.price("tea".into()).await.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("a call over the balanced channel succeeds");

    server.shutdown().await;
    metrics
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_exported() {
    let text = std::fs::read_to_string(DASHBOARD).expect("docs/grafana-dashboard.json");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(dashboard["schemaVersion"], 39);
    assert_eq!(dashboard["uid"], "traitrpc-services");

    let mut all = Vec::new();
    panels(&dashboard["panels"], &mut all);
    assert!(!all.is_empty(), "the dashboard has panels");
    let mut ids = BTreeSet::new();
    let mut queried = BTreeSet::new();
    for panel in &all {
        let title = panel["title"].as_str().unwrap_or("?");
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel {title:?} has an id"));
        assert!(ids.insert(id), "panel id {id} ({title:?}) is unique");
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64(), grid["w"].as_u64());
        assert!(
            matches!((x, w), (Some(x), Some(w)) if w > 0 && x + w <= 24),
            "panel {title:?} fits the 24 columns: {grid}"
        );
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().map(Vec::as_slice);
        let exprs: Vec<&str> = targets
            .unwrap_or_default()
            .iter()
            .filter_map(|t| t["expr"].as_str())
            .collect();
        assert!(!exprs.is_empty(), "panel {title:?} has a query");
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {title:?} uses the data source variable"
        );
        for expr in exprs {
            metric_names(expr, &mut queried);
        }
    }

    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("template variables");
    assert!(
        variables.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "a `datasource` variable of Prometheus data sources"
    );
    for name in ["service", "method", "target"] {
        assert!(
            variables.iter().any(|v| v["name"] == name),
            "a `{name}` variable"
        );
    }
    for variable in variables {
        for key in ["query", "definition"] {
            if let Some(text) = query_text(&variable[key]) {
                metric_names(text, &mut queried);
            }
        }
    }
    // The scanner found the names (a broken scanner would pass everything).
    assert!(queried.len() >= 15, "metric names found: {queried:?}");

    let exported = metrics_with_samples().await.encode();
    let missing: Vec<&String> = queried
        .iter()
        .filter(|name| {
            !exported.lines().any(|line| {
                line.strip_prefix(name.as_str())
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics that are not exported: {missing:?}\n{exported}"
    );
}
