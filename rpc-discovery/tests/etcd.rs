//! etcd as the registry, against a real etcd (`RPC_TEST_ETCD`, started by `.ci/etcd.sh`)
//! and real server processes (`discovery-test-server`). Each test is `#[ignore]`d with the
//! reason, so a plain `cargo test` lists it as ignored; `-- --include-ignored` runs them,
//! and then a missing etcd fails them (CI starts one).

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{etcd_endpoint, unique_service, within, ReplicaClient, ServerProcess};
use traitrpc_core::RpcError;
use traitrpc_discovery::etcd::{self, EtcdClient, EtcdDiscovery, RegisterOptions};
use traitrpc_discovery::{BalancedChannel, Discovery, Endpoint};

fn addrs(channel: &BalancedChannel) -> Vec<String> {
    channel
        .endpoints()
        .into_iter()
        .map(|e| e.endpoint.addr)
        .collect()
}

async fn spawn_server(name: &str, etcd: &str, service: &str, ttl: u64) -> ServerProcess {
    let (name, etcd, service) = (name.to_string(), etcd.to_string(), service.to_string());
    tokio::task::spawn_blocking(move || ServerProcess::spawn(&name, Some((&etcd, &service, ttl))))
        .await
        .unwrap()
}

/// What the load saw.
#[derive(Default)]
struct Load {
    calls: AtomicUsize,
    failures: Mutex<Vec<RpcError>>,
    /// When each replica first answered.
    first_answer: Mutex<HashMap<String, Instant>>,
    stop: AtomicBool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd: `source .ci/etcd.sh` (or RPC_TEST_ETCD), then --include-ignored"]
async fn cluster_rides_through_a_sigkill_and_follows_membership() {
    let etcd = etcd_endpoint("cluster_rides_through_a_sigkill_and_follows_membership");
    let service = unique_service("cluster");
    let ttl = 3;
    let mut servers = Vec::new();
    for i in 1..=3 {
        servers.push(spawn_server(&format!("s{i}"), &etcd, &service, ttl).await);
    }
    let client = EtcdClient::connect([etcd.as_str()]).await.unwrap();
    let channel = BalancedChannel::builder(EtcdDiscovery::new(client.clone(), &service)).build();
    assert!(
        within(Duration::from_secs(5), || channel.endpoints().len() == 3)
            .await
            .is_some(),
        "three registered servers are discovered"
    );
    let replica = ReplicaClient::new(channel.clone());

    // A bounded load of idempotent calls from 6 workers.
    let load = Arc::new(Load::default());
    let mut workers = Vec::new();
    for _ in 0..6 {
        let (replica, load) = (replica.clone(), Arc::clone(&load));
        workers.push(tokio::spawn(async move {
            for _ in 0..20_000 {
                if load.stop.load(Ordering::SeqCst) {
                    break;
                }
                match replica.work(2).await {
                    Ok(name) => {
                        load.first_answer
                            .lock()
                            .unwrap()
                            .entry(name)
                            .or_insert_with(Instant::now);
                    }
                    Err(error) => load.failures.lock().unwrap().push(error),
                }
                load.calls.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    // The load reaches every server.
    assert!(
        within(Duration::from_secs(5), || load
            .first_answer
            .lock()
            .unwrap()
            .len()
            == 3)
        .await
        .is_some(),
        "all three servers answer"
    );

    // Non-idempotent calls in flight on every server: a channel of their own, so that
    // round robin puts exactly two on each.
    let records_channel =
        BalancedChannel::builder(EtcdDiscovery::new(client.clone(), &service)).build();
    // Connected to all three first: round robin only picks among connected endpoints,
    // so on a loaded machine a late connection would take no share of the calls.
    assert!(within(Duration::from_secs(5), || {
        let endpoints = records_channel.endpoints();
        endpoints.len() == 3 && endpoints.iter().all(|e| e.connected)
    })
    .await
    .is_some());
    let records_client = ReplicaClient::new(records_channel.clone());
    let records: Vec<_> = (0..6)
        .map(|_| {
            let client = records_client.clone();
            tokio::spawn(async move { client.record(1500).await })
        })
        .collect();
    // Two in flight on each server (as the channel counts its attempts).
    assert!(within(Duration::from_secs(5), || {
        let endpoints = records_channel.endpoints();
        endpoints.len() == 3 && endpoints.iter().all(|e| e.in_flight == 2)
    })
    .await
    .is_some());

    // SIGKILL s1 mid-load.
    let victim = servers.remove(0);
    let victim_addr = victim.addr.to_string();
    let killed_at = Instant::now();
    let mut victim = victim;
    tokio::task::spawn_blocking(move || {
        victim.kill();
        victim
    })
    .await
    .unwrap();

    let mut record_failures = Vec::new();
    let mut record_answers = Vec::new();
    for call in records {
        match call.await.unwrap() {
            Ok(name) => record_answers.push(name),
            Err(error) => record_failures.push(error),
        }
    }
    assert_eq!(
        record_failures.len(),
        2,
        "{record_failures:?} {record_answers:?}"
    );
    for error in &record_failures {
        assert!(
            matches!(error, RpcError::ConnectionClosed { .. }),
            "typed error for a non-idempotent call in flight: {error:?}"
        );
    }
    assert!(
        record_answers.iter().all(|n| n != "s1"),
        "{record_answers:?}"
    );

    // The dead server leaves the set when its lease expires.
    let left = within(Duration::from_secs(ttl + 3), || {
        !addrs(&channel).contains(&victim_addr)
    })
    .await
    .expect("the killed server leaves the set");
    let left_after = killed_at.elapsed();
    eprintln!("killed server left the set {left_after:?} after SIGKILL (lease TTL {ttl} s; waited {left:?})");
    assert!(
        left_after <= Duration::from_secs(ttl) + Duration::from_millis(1000),
        "{left_after:?}"
    );

    // A fourth server receives calls within 2 s of registering.
    let s4 = spawn_server("s4", &etcd, &service, ttl).await;
    let registered_at = Instant::now();
    let answered = within(Duration::from_secs(5), || {
        load.first_answer.lock().unwrap().contains_key("s4")
    })
    .await
    .expect("s4 receives calls");
    let first = load.first_answer.lock().unwrap()["s4"];
    let latency = first.saturating_duration_since(registered_at);
    eprintln!("s4 answered its first call {latency:?} after registering (waited {answered:?})");
    assert!(latency < Duration::from_secs(2), "{latency:?}");

    // A graceful shutdown deregisters at once (well before the lease TTL).
    let mut s2 = servers.remove(0);
    let s2_addr = s2.addr.to_string();
    let stopping = Instant::now();
    s2.stop();
    let gone = within(Duration::from_secs(ttl), || {
        !addrs(&channel).contains(&s2_addr)
    })
    .await
    .expect("a stopped server leaves the set");
    eprintln!(
        "gracefully stopped server left the set after {:?}",
        stopping.elapsed()
    );
    assert!(gone < Duration::from_secs(1), "{gone:?}");
    tokio::task::spawn_blocking(move || s2.wait())
        .await
        .unwrap();

    tokio::time::sleep(Duration::from_millis(300)).await;
    load.stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }
    let failures = load.failures.lock().unwrap();
    eprintln!(
        "{} idempotent calls, {} failed",
        load.calls.load(Ordering::SeqCst),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "no idempotent call fails: {failures:?}"
    );
    assert!(load.calls.load(Ordering::SeqCst) > 500);
    drop(s4);
}

#[tokio::test]
#[ignore = "needs etcd: `source .ci/etcd.sh` (or RPC_TEST_ETCD), then --include-ignored"]
async fn registrations_appear_and_leave_with_weights_and_metadata() {
    let etcd = etcd_endpoint("registrations_appear_and_leave_with_weights_and_metadata");
    let service = unique_service("registry");
    let client = EtcdClient::connect([etcd.as_str()]).await.unwrap();
    let discovery = EtcdDiscovery::new(client.clone(), &service);
    let mut endpoints = discovery.subscribe();
    let initial = tokio::time::timeout(Duration::from_secs(5), endpoints.ready())
        .await
        .unwrap()
        .unwrap();
    assert!(initial.is_empty());

    let options = RegisterOptions::new().ttl(Duration::from_secs(5));
    let heavy = Endpoint::new("127.0.0.1:1001")
        .with_weight(7)
        .with_metadata("zone", "a");
    let first = etcd::register(&client, &service, heavy.clone(), options.clone())
        .await
        .unwrap();
    let second = etcd::register(&client, &service, "127.0.0.1:1002", options.clone())
        .await
        .unwrap();
    assert!(first.key().ends_with("/127.0.0.1:1001"), "{}", first.key());
    // A bare address (written by another tool) is accepted too.
    let kv = client.clone();
    let bare_key = format!(
        "{}127.0.0.1:1003",
        etcd::service_prefix(etcd::DEFAULT_PREFIX, &service)
    );
    kv.put(bare_key.as_bytes(), b"127.0.0.1:1003", 0)
        .await
        .unwrap();

    let wait_for = |endpoints: &traitrpc_discovery::Endpoints, n: usize| {
        let endpoints = endpoints.clone();
        async move {
            within(Duration::from_secs(3), || {
                endpoints.current().is_some_and(|s| s.len() == n)
            })
            .await
        }
    };
    assert!(wait_for(&endpoints, 3).await.is_some());
    let set = endpoints.current().unwrap();
    assert_eq!(set[0], heavy);
    assert_eq!(set[2], Endpoint::new("127.0.0.1:1003"));

    first.deregister().await.unwrap();
    assert!(
        wait_for(&endpoints, 2).await.is_some(),
        "deregister removes at once"
    );
    drop(second); // revokes in the background
    assert!(
        wait_for(&endpoints, 1).await.is_some(),
        "dropping revokes the lease"
    );
    kv.delete(bare_key.as_bytes()).await.unwrap();
    assert!(wait_for(&endpoints, 0).await.is_some());
}

#[tokio::test]
#[ignore = "needs etcd: `source .ci/etcd.sh` (or RPC_TEST_ETCD), then --include-ignored"]
async fn serve_registers_and_shutdown_deregisters_first() {
    let etcd = etcd_endpoint("serve_registers_and_shutdown_deregisters_first");
    let service = unique_service("serve");
    let client = EtcdClient::connect([etcd.as_str()]).await.unwrap();
    let server = etcd::serve(
        "127.0.0.1:0",
        support::ReplicaServer::new(support::ReplicaImpl::new("registered")),
        &client,
        &service,
        RegisterOptions::new(),
    )
    .await
    .unwrap();
    let channel = BalancedChannel::builder(EtcdDiscovery::new(client.clone(), &service)).build();
    let replica = ReplicaClient::new(channel.clone());
    assert!(
        within(Duration::from_secs(5), || channel.endpoints().len() == 1)
            .await
            .is_some()
    );
    assert_eq!(replica.whoami().await.unwrap(), "registered");
    server.shutdown().await;
    assert!(
        within(Duration::from_secs(1), || channel.endpoints().is_empty())
            .await
            .is_some()
    );
    let result = replica.whoami().await;
    assert!(
        matches!(result, Err(RpcError::Unavailable { .. })),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd: `source .ci/etcd.sh` (or RPC_TEST_ETCD), then --include-ignored"]
async fn discovery_and_registration_survive_an_etcd_restart() {
    etcd_endpoint("discovery_and_registration_survive_an_etcd_restart");
    let mut private = tokio::task::spawn_blocking(support::PrivateEtcd::start)
        .await
        .unwrap();
    let client = EtcdClient::connect([private.endpoint.as_str()])
        .await
        .unwrap();
    let service = unique_service("restart");
    let options = RegisterOptions::new().ttl(Duration::from_secs(3));
    let first = etcd::register(&client, &service, "127.0.0.1:2001", options.clone())
        .await
        .unwrap();
    let discovery = EtcdDiscovery::new(client.clone(), &service);
    let endpoints = discovery.subscribe();
    let count = |n: usize| {
        let endpoints = endpoints.clone();
        move || endpoints.current().is_some_and(|s| s.len() == n)
    };
    assert!(within(Duration::from_secs(5), count(1)).await.is_some());

    // The watch breaks while etcd is down; discovery keeps the last set, lists again
    // when etcd is back, and watches from there.
    let restarted = Instant::now();
    private = tokio::task::spawn_blocking(move || {
        private.kill();
        std::thread::sleep(Duration::from_millis(500));
        private.restart();
        private
    })
    .await
    .unwrap();
    assert!(count(1)(), "the last set stays while etcd is away");
    let second = etcd::register(&client, &service, "127.0.0.1:2002", options.clone())
        .await
        .unwrap();
    let seen = within(Duration::from_secs(15), count(2))
        .await
        .expect("a registration after the restart is seen: the watch was re-established");
    eprintln!(
        "after an etcd restart ({:?} ago), a new registration was seen after {seen:?}",
        restarted.elapsed()
    );
    // The first registration's lease was kept alive across the restart.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(count(2)(), "both registrations outlive their 3 s TTL");
    first.deregister().await.unwrap();
    second.deregister().await.unwrap();
    assert!(within(Duration::from_secs(3), count(0)).await.is_some());
    drop(private);
}

#[tokio::test]
#[ignore = "needs etcd: `source .ci/etcd.sh` (or RPC_TEST_ETCD), then --include-ignored"]
async fn a_watch_from_a_compacted_revision_says_so() {
    let etcd = etcd_endpoint("a_watch_from_a_compacted_revision_says_so");
    let client = EtcdClient::connect([etcd.as_str()]).await.unwrap();
    let prefix = format!("/{}/", unique_service("compact"));
    let key = format!("{prefix}k");
    let first = client.put(key.as_bytes(), b"1", 0).await.unwrap();
    let latest = client.put(key.as_bytes(), b"2", 0).await.unwrap();
    client.compact(latest).await.unwrap();
    let mut watch = client.watch_prefix(prefix.as_bytes(), first).await.unwrap();
    let mut compacted = 0;
    while let Some(update) = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("etcd answers the watch")
        .unwrap()
    {
        if update.compact_revision > 0 {
            compacted = update.compact_revision;
            break;
        }
    }
    assert_eq!(
        compacted, latest,
        "the watch reports where history now starts"
    );
    client.delete(key.as_bytes()).await.unwrap();
}

#[tokio::test]
#[ignore = "needs etcd: `source .ci/etcd.sh` (or RPC_TEST_ETCD), then --include-ignored"]
async fn the_client_fails_over_to_a_member_that_answers() {
    let etcd = etcd_endpoint("the_client_fails_over_to_a_member_that_answers");
    // A port nothing listens on (bound, then released), then the real etcd.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_endpoint = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let client = EtcdClient::connect([dead_endpoint.as_str(), etcd.as_str()])
        .await
        .unwrap();
    let key = format!("/{}", unique_service("failover"));
    client.put(key.as_bytes(), b"v", 0).await.unwrap();
    let listed = client.get_prefix(key.as_bytes()).await.unwrap();
    assert_eq!(listed.kvs.len(), 1);
    assert_eq!(listed.kvs[0].value, b"v");
    client.delete(key.as_bytes()).await.unwrap();
    // Only dead members: a typed error, quickly.
    let unreachable = etcd::EtcdClient::connect([dead_endpoint.as_str()]).await;
    assert!(
        matches!(unreachable, Err(etcd::EtcdError::Unreachable { .. })),
        "{unreachable:?}"
    );
}
