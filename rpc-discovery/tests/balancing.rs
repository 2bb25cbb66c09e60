//! A balanced channel against real TCP servers on loopback (in this process): balancer
//! behaviour under load, retry safety, reconnection, outlier ejection and endpoint changes.

mod support;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{start, within, ReplicaClient, ReplicaImpl};
use traitrpc_core::RpcError;
use traitrpc_discovery::balance::{ConsistentHash, LeastInFlight, PowerOfTwoChoices, RoundRobin};
use traitrpc_discovery::{
    Backoff, BalancedChannel, Balancer, OutlierPolicy, RetryPolicy, StaticDiscovery,
};

/// An address nothing listens on, for as long as the returned guard lives: the port is
/// held on 127.0.0.1 (so nothing else can take it, not even on 0.0.0.0), and the address
/// given out is 127.0.0.2 on that port, where connections are refused.
async fn dead_addr() -> (String, tokio::net::TcpListener) {
    let holder = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = holder.local_addr().unwrap().port();
    (format!("127.0.0.2:{port}"), holder)
}

/// Runs `total` `work(1)` calls from `workers` concurrent tasks and counts who answered.
async fn spread(client: &ReplicaClient, workers: usize, total: usize) -> HashMap<String, usize> {
    let per_worker = total / workers;
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..per_worker {
                seen.push(client.work(1).await.expect("call"));
            }
            seen
        }));
    }
    let mut counts = HashMap::new();
    for task in tasks {
        for name in task.await.unwrap() {
            *counts.entry(name).or_insert(0) += 1;
        }
    }
    counts
}

/// Three replicas, `slow` answering `work` 40 ms later than the others.
async fn with_slow_replica(balancer: impl Balancer) -> (f64, HashMap<String, usize>) {
    let fast1 = start(ReplicaImpl::new("fast1")).await;
    let fast2 = start(ReplicaImpl::new("fast2")).await;
    let slow = start(ReplicaImpl {
        delay: Duration::from_millis(40),
        ..ReplicaImpl::new("slow")
    })
    .await;
    let channel = BalancedChannel::builder(StaticDiscovery::new([
        fast1.local_addr(),
        fast2.local_addr(),
        slow.local_addr(),
    ]))
    .balancer(balancer)
    .build();
    let client = ReplicaClient::new(channel);
    let counts = spread(&client, 12, 1200).await;
    let total: usize = counts.values().sum();
    let share = *counts.get("slow").unwrap_or(&0) as f64 / total as f64;
    (share, counts)
}

#[tokio::test]
async fn least_in_flight_routes_away_from_a_slow_endpoint() {
    let (share, counts) = with_slow_replica(LeastInFlight::new()).await;
    eprintln!("least in flight: slow share {share:.3} {counts:?}");
    assert!(share < 0.10, "slow share {share} {counts:?}");
}

#[tokio::test]
async fn p2c_routes_away_from_a_slow_endpoint() {
    let (share, counts) = with_slow_replica(PowerOfTwoChoices::new()).await;
    eprintln!("p2c: slow share {share:.3} {counts:?}");
    assert!(share < 0.15, "slow share {share} {counts:?}");
}

#[tokio::test]
async fn round_robin_is_exactly_fair_over_real_servers() {
    let servers = [
        start(ReplicaImpl::new("a")).await,
        start(ReplicaImpl::new("b")).await,
        start(ReplicaImpl::new("c")).await,
    ];
    let channel = BalancedChannel::from_static(servers.iter().map(|s| s.local_addr()));
    let client = ReplicaClient::new(channel);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..300 {
        *counts.entry(client.whoami().await.unwrap()).or_default() += 1;
    }
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![100; 3],
        "{counts:?}"
    );
}

#[tokio::test]
async fn consistent_hash_sends_a_key_to_one_replica() {
    let servers = [
        start(ReplicaImpl::new("a")).await,
        start(ReplicaImpl::new("b")).await,
        start(ReplicaImpl::new("c")).await,
    ];
    let channel =
        BalancedChannel::builder(StaticDiscovery::new(servers.iter().map(|s| s.local_addr())))
            .balancer(ConsistentHash::new())
            .build();
    let client = ReplicaClient::new(channel);
    let mut owners = std::collections::HashSet::new();
    for user in 0..30 {
        let keyed = client.with_routing_key(format!("user-{user}"));
        let first = keyed.whoami().await.unwrap();
        for _ in 0..5 {
            assert_eq!(keyed.whoami().await.unwrap(), first);
        }
        owners.insert(first);
    }
    assert_eq!(owners.len(), 3, "30 keys spread over all replicas");
}

#[tokio::test]
async fn connect_failures_are_retried_on_another_endpoint() {
    let live = start(ReplicaImpl::new("live")).await;
    let (dead, _hold) = dead_addr().await;
    let channel = BalancedChannel::from_static([dead, live.local_addr().to_string()]);
    let client = ReplicaClient::new(channel.clone());
    // Non-idempotent calls too: a refused connection never ran anything.
    for _ in 0..20 {
        assert_eq!(client.record(0).await.unwrap(), "live");
    }
    let dead = channel
        .endpoints()
        .into_iter()
        .find(|e| e.endpoint.addr != live.local_addr().to_string())
        .unwrap();
    assert!(!dead.connected, "{dead:?}");
}

/// Two replicas; a call of `method` is in flight on the first when its server is aborted.
async fn lost_connection_during(idempotent: bool) -> (Result<String, RpcError>, usize, usize) {
    let victim = ReplicaImpl::new("victim");
    let other = ReplicaImpl::new("other");
    let victim_server = start(victim.clone()).await;
    let other_server = start(other.clone()).await;
    // Round robin starts with the first endpoint, sorted by address.
    let mut addrs = [victim_server.local_addr(), other_server.local_addr()];
    addrs.sort_by_key(|a| a.to_string());
    let channel = BalancedChannel::builder(StaticDiscovery::new(addrs))
        .balancer(RoundRobin::new())
        .build();
    channel.ready().await;
    let client = ReplicaClient::new(channel);
    let call = {
        let client = client.clone();
        tokio::spawn(async move {
            if idempotent {
                client.work(400).await
            } else {
                client.record(400).await
            }
        })
    };
    assert!(within(Duration::from_secs(2), || victim
        .calls
        .load(Ordering::SeqCst)
        + other.calls.load(Ordering::SeqCst)
        == 1)
    .await
    .is_some());
    let on_victim = victim.calls.load(Ordering::SeqCst) == 1;
    let (running, shutdown_later) = if on_victim {
        (victim_server, other_server)
    } else {
        (other_server, victim_server)
    };
    running.abort().await;
    let result = call.await.unwrap();
    let survivor_calls = if on_victim {
        other.calls.load(Ordering::SeqCst)
    } else {
        victim.calls.load(Ordering::SeqCst)
    };
    shutdown_later.shutdown().await;
    (result, 1, survivor_calls)
}

#[tokio::test]
async fn a_non_idempotent_call_on_a_lost_connection_fails_with_a_typed_error_and_is_not_retried() {
    let (result, _, survivor_calls) = lost_connection_during(false).await;
    assert!(
        matches!(result, Err(RpcError::ConnectionClosed { .. })),
        "{result:?}"
    );
    assert_eq!(survivor_calls, 0, "the call must not run a second time");
}

#[tokio::test]
async fn an_idempotent_call_on_a_lost_connection_is_retried_elsewhere() {
    let (result, _, survivor_calls) = lost_connection_during(true).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(survivor_calls, 1);
}

#[tokio::test]
async fn graceful_shutdown_of_a_replica_fails_no_call() {
    let a_impl = ReplicaImpl::new("a");
    let a_calls = a_impl.calls.clone();
    let a = start(a_impl).await;
    let b = start(ReplicaImpl::new("b")).await;
    let channel = BalancedChannel::from_static([a.local_addr(), b.local_addr()]);
    let client = ReplicaClient::new(channel);
    let load = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            for _ in 0..8 {
                let client = client.clone();
                tasks.push(tokio::spawn(async move {
                    let mut failures = Vec::new();
                    for _ in 0..100 {
                        // Non-idempotent: calls refused while draining are safe to retry.
                        if let Err(e) = client.record(2).await {
                            failures.push(e);
                        }
                    }
                    failures
                }));
            }
            let mut failures = Vec::new();
            for t in tasks {
                failures.extend(t.await.unwrap());
            }
            failures
        })
    };
    // Shut a down once the load is on it.
    assert!(
        within(Duration::from_secs(5), || a_calls.load(Ordering::SeqCst)
            >= 20)
        .await
        .is_some()
    );
    a.shutdown().await;
    let failures = load.await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    b.shutdown().await;
}

#[tokio::test]
async fn endpoint_changes_keep_calls_in_flight() {
    let (a_impl, b_impl) = (ReplicaImpl::new("a"), ReplicaImpl::new("b"));
    let (a_records, b_records) = (a_impl.records.clone(), b_impl.records.clone());
    let a = start(a_impl).await;
    let b = start(b_impl).await;
    let c = start(ReplicaImpl::new("c")).await;
    let discovery = StaticDiscovery::new([a.local_addr(), b.local_addr()]);
    let channel = BalancedChannel::builder(discovery.clone()).build();
    let client = ReplicaClient::new(channel.clone());
    let in_flight: Vec<_> = (0..4)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.record(300).await })
        })
        .collect();
    // All four are running on a and b.
    assert!(within(Duration::from_secs(5), || {
        a_records.load(Ordering::SeqCst) + b_records.load(Ordering::SeqCst) == 4
    })
    .await
    .is_some());
    discovery.set([c.local_addr()]);
    assert!(
        within(Duration::from_secs(1), || channel.endpoints().len() == 1)
            .await
            .is_some()
    );
    for call in in_flight {
        let name = call
            .await
            .unwrap()
            .expect("in-flight call survives the change");
        assert!(name == "a" || name == "b");
    }
    for _ in 0..5 {
        assert_eq!(client.whoami().await.unwrap(), "c");
    }
}

#[tokio::test]
async fn reconnects_after_the_server_comes_back() {
    let replica = ReplicaImpl::new("phoenix");
    let server = start(replica.clone()).await;
    let addr = server.local_addr();
    let channel = BalancedChannel::builder(StaticDiscovery::new([addr]))
        .reconnect_backoff(Backoff::new(
            Duration::from_millis(20),
            Duration::from_millis(100),
        ))
        .build();
    let client = ReplicaClient::new(channel.clone());
    assert_eq!(client.whoami().await.unwrap(), "phoenix");
    server.abort().await;
    let failed = client
        .with_timeout(Duration::from_millis(300))
        .whoami()
        .await;
    assert!(failed.is_err());
    // Same port, new process-equivalent: the same client handle recovers.
    let again = traitrpc_transport_tcp::serve(addr, support::ReplicaServer::new(replica))
        .await
        .unwrap();
    let mut recovered = false;
    for _ in 0..100 {
        if client.whoami().await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(recovered, "{:?}", channel.endpoints());
    again.shutdown().await;
}

#[tokio::test]
async fn failing_endpoint_is_ejected_then_probed_back() {
    let good = ReplicaImpl::new("good");
    let flaky = ReplicaImpl::new("flaky");
    flaky.broken.store(true, Ordering::SeqCst);
    let good_server = start(good.clone()).await;
    let flaky_server = start(flaky.clone()).await;
    let channel = BalancedChannel::builder(StaticDiscovery::new([
        good_server.local_addr(),
        flaky_server.local_addr(),
    ]))
    .outlier(OutlierPolicy {
        consecutive_failures: 3,
        base_ejection: Duration::from_millis(300),
        max_ejection: Duration::from_secs(5),
    })
    .build();
    let client = ReplicaClient::new(channel.clone());
    // Panicking handlers are failures (not retried: the call ran).
    let mut panics = 0;
    for _ in 0..20 {
        if client.whoami().await.is_err() {
            panics += 1;
        }
    }
    assert_eq!(panics, 3, "ejected after 3 failures in a row");
    let flaky_addr = flaky_server.local_addr().to_string();
    let status = |channel: &BalancedChannel| {
        channel
            .endpoints()
            .into_iter()
            .find(|e| e.endpoint.addr == flaky_addr)
            .unwrap()
    };
    assert!(status(&channel).ejected);
    // Fixed; after the ejection period a probe reaches it and it returns.
    flaky.broken.store(false, Ordering::SeqCst);
    let calls_before = flaky.calls.load(Ordering::SeqCst);
    let ejected_at = Instant::now();
    let probed = calls_until(&client, || {
        flaky.calls.load(Ordering::SeqCst) > calls_before
    })
    .await;
    // Not before the ejection period is over (a lower bound: a slow machine only waits
    // longer).
    assert!(probed.duration_since(ejected_at) >= Duration::from_millis(250));
    for _ in 0..10 {
        client.whoami().await.unwrap();
    }
    assert!(!status(&channel).ejected);
    assert!(flaky.calls.load(Ordering::SeqCst) > calls_before + 1);
}

#[tokio::test]
async fn a_failed_probe_ejects_again_for_longer() {
    let good = start(ReplicaImpl::new("good")).await;
    let flaky = ReplicaImpl::new("flaky");
    flaky.broken.store(true, Ordering::SeqCst);
    let flaky_server = start(flaky.clone()).await;
    let channel = BalancedChannel::builder(StaticDiscovery::new([
        good.local_addr(),
        flaky_server.local_addr(),
    ]))
    .outlier(OutlierPolicy {
        consecutive_failures: 2,
        base_ejection: Duration::from_millis(300),
        max_ejection: Duration::from_secs(5),
    })
    .build();
    let client = ReplicaClient::new(channel);
    for _ in 0..6 {
        let _ = client.whoami().await;
    }
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 2);
    // After the 300 ms period, one probe, which fails...
    let first_probe = calls_until(&client, || flaky.calls.load(Ordering::SeqCst) == 3).await;
    for _ in 0..10 {
        let _ = client.whoami().await;
    }
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 3, "exactly one probe");
    // ...ejects it again, for twice as long (a lower bound on when the next probe comes).
    let second_probe = calls_until(&client, || flaky.calls.load(Ordering::SeqCst) == 4).await;
    assert!(
        second_probe.duration_since(first_probe) >= Duration::from_millis(550),
        "the second ejection lasted {:?}",
        second_probe.duration_since(first_probe)
    );
}

#[tokio::test]
async fn retries_respect_the_deadline() {
    let ((dead1, _hold1), (dead2, _hold2)) = (dead_addr().await, dead_addr().await);
    let channel = BalancedChannel::builder(StaticDiscovery::new([dead1, dead2]))
        .retry(RetryPolicy {
            max_attempts: 100,
            ..RetryPolicy::default()
        })
        .build();
    let client = ReplicaClient::new(channel);
    let started = Instant::now();
    let result = client
        .with_timeout(Duration::from_millis(300))
        .whoami()
        .await;
    let elapsed = started.elapsed();
    assert!(result.is_err());
    assert!(elapsed < Duration::from_millis(600), "{elapsed:?}");
}

#[tokio::test]
async fn no_retry_without_budget() {
    // A replica at its concurrency limit (one call, held) sheds every other call with
    // OVERLOADED: it never ran, so it is safe to retry, if the budget allows.
    let busy = traitrpc_transport_tcp::serve_with_config(
        "127.0.0.1:0",
        support::ReplicaServer::new(ReplicaImpl::new("busy")),
        traitrpc_core::ServerConfig::default().max_concurrent_calls(1),
    )
    .await
    .unwrap();
    let holder = ReplicaClient::new(
        traitrpc_transport_tcp::connect(busy.local_addr())
            .await
            .unwrap(),
    );
    let held = tokio::spawn(async move { holder.work(60_000).await });
    let live = start(ReplicaImpl::new("live")).await;
    let addrs = [busy.local_addr(), live.local_addr()];
    let without_budget = BalancedChannel::builder(StaticDiscovery::new(addrs))
        .retry(RetryPolicy {
            budget_ratio: 0.0,
            budget_min_per_second: 0,
            ..RetryPolicy::default()
        })
        .outlier(OutlierPolicy {
            consecutive_failures: 0,
            ..OutlierPolicy::default()
        })
        .build();
    let with_budget = BalancedChannel::builder(StaticDiscovery::new(addrs))
        .outlier(OutlierPolicy {
            consecutive_failures: 0,
            ..OutlierPolicy::default()
        })
        .build();
    for channel in [&without_budget, &with_budget] {
        assert!(within(Duration::from_secs(5), || channel
            .endpoints()
            .iter()
            .all(|e| e.connected))
        .await
        .is_some());
    }
    let results = sequential_calls(&ReplicaClient::new(without_budget), 4).await;
    assert!(
        results
            .iter()
            .any(|r| matches!(r, Err(RpcError::Overloaded { .. }))),
        "a shed call cannot be retried without budget: {results:?}"
    );
    let results = sequential_calls(&ReplicaClient::new(with_budget), 4).await;
    assert!(
        results.iter().all(|r| r.as_deref() == Ok("live")),
        "with budget, shed calls are retried on the other replica: {results:?}"
    );
    held.abort();
}

/// Makes calls (ignoring their results) until `reached` holds, up to 10 s; returns when.
async fn calls_until(client: &ReplicaClient, reached: impl Fn() -> bool) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reached() {
        assert!(Instant::now() < deadline, "not reached within 10 s");
        let _ = client.whoami().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Instant::now()
}

async fn sequential_calls(client: &ReplicaClient, n: usize) -> Vec<Result<String, RpcError>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(client.whoami().await);
    }
    out
}

#[tokio::test]
async fn calls_wait_for_discovery_then_fail_fast_on_an_empty_set() {
    let discovery = Arc::new(StaticDiscovery::new(Vec::<String>::new()));
    let channel = BalancedChannel::builder(Arc::clone(&discovery)).build();
    let client = ReplicaClient::new(channel);
    let result = client.whoami().await;
    assert!(
        matches!(result, Err(RpcError::Unavailable { .. })),
        "{result:?}"
    );
    let server = start(ReplicaImpl::new("late")).await;
    discovery.set([server.local_addr()]);
    // The channel's background task applies the change.
    let mut ok = false;
    for _ in 0..50 {
        if client.whoami().await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ok);
}

/// An endpoint on probation whose one probe is out cannot take another call; a balancer
/// that still prefers it (it is the least loaded) must not make callers spin: they go to
/// the other endpoint. (The chaos test's CI hang: with two candidates, P2C picked the
/// probing endpoint forever and the caller never yielded, until both runtime workers
/// were stuck.)
#[tokio::test]
async fn a_probe_in_flight_sends_other_calls_elsewhere_without_spinning() {
    let good = ReplicaImpl::new("good");
    let flaky = ReplicaImpl::new("flaky");
    flaky.broken.store(true, Ordering::SeqCst);
    let good_server = start(good.clone()).await;
    let flaky_server = start(flaky.clone()).await;
    let ejection = Duration::from_millis(300);
    let channel = BalancedChannel::builder(StaticDiscovery::new([
        good_server.local_addr(),
        flaky_server.local_addr(),
    ]))
    .balancer(LeastInFlight::new())
    .outlier(OutlierPolicy {
        consecutive_failures: 2,
        base_ejection: ejection,
        max_ejection: Duration::from_secs(5),
    })
    .build();
    let client = ReplicaClient::new(channel.clone());
    let flaky_addr = flaky_server.local_addr().to_string();
    let ejected = || {
        channel
            .endpoints()
            .into_iter()
            .any(|e| e.endpoint.addr == flaky_addr && e.ejected)
    };
    for _ in 0..20 {
        if ejected() {
            break;
        }
        let _ = client.whoami().await;
    }
    assert!(ejected(), "the flaky endpoint was ejected");
    flaky.broken.store(false, Ordering::SeqCst);

    // The good endpoint carries three slow calls; once the ejection period is over the
    // flaky one (no calls) is the least loaded, and the next call there is its probe.
    let good_before = good.calls.load(Ordering::SeqCst);
    let slow: Vec<_> = (0..3)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.work(3_000).await })
        })
        .collect();
    within(Duration::from_secs(5), || {
        good.calls.load(Ordering::SeqCst) >= good_before + 3
    })
    .await
    .expect("the slow calls reached the good endpoint");
    tokio::time::sleep(ejection + Duration::from_millis(50)).await;
    let before = flaky.calls.load(Ordering::SeqCst);
    let probe = {
        let client = client.clone();
        tokio::spawn(async move { client.work(3_000).await })
    };
    within(Duration::from_secs(5), || {
        flaky.calls.load(Ordering::SeqCst) > before
    })
    .await
    .expect("the probe reached the flaky endpoint");

    // The balancer prefers the flaky endpoint (1 in flight against 3), which cannot
    // take the call: it goes to the good one.
    let answer = client
        .with_timeout(Duration::from_secs(2))
        .whoami()
        .await
        .expect("answered by the other endpoint, not left spinning to its deadline");
    assert_eq!(answer, "good");
    for call in slow {
        call.await.unwrap().unwrap();
    }
    probe.await.unwrap().unwrap();
}
