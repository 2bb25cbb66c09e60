//! DNS discovery against a tiny authoritative DNS server this test runs on loopback
//! (UDP, answering SRV, A and AAAA from a zone the test edits).

mod support;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{start, within, ReplicaClient, ReplicaImpl};
use traitrpc_discovery::balance::WeightedRoundRobin;
use traitrpc_discovery::dns::hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use traitrpc_discovery::dns::hickory_resolver::proto::rr::rdata::{A, AAAA, SRV};
use traitrpc_discovery::dns::hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use traitrpc_discovery::dns::DnsDiscovery;
use traitrpc_discovery::{BalancedChannel, Discovery, Endpoint};

/// SRV records: (priority, weight, port, target).
type Srv = (u16, u16, u16, &'static str);

#[derive(Default)]
struct Zone {
    srv: HashMap<String, Vec<Srv>>,
    ips: HashMap<String, Vec<IpAddr>>,
}

/// Answers queries from `zone` with a TTL of 1 s until the test ends.
async fn dns_server(zone: Arc<Mutex<Zone>>) -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(request) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let reply = answer(&request, &zone.lock().unwrap());
            let _ = socket.send_to(&reply.to_vec().unwrap(), peer).await;
        }
    });
    addr
}

fn answer(request: &Message, zone: &Zone) -> Message {
    let mut reply = Message::new();
    reply
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_authoritative(true)
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true);
    let mut known = false;
    for query in request.queries() {
        reply.add_query(query.clone());
        let name = query.name().to_ascii().trim_end_matches('.').to_lowercase();
        known |= zone.srv.contains_key(&name) || zone.ips.contains_key(&name);
        match query.query_type() {
            RecordType::SRV => {
                for &(priority, weight, port, target) in zone.srv.get(&name).into_iter().flatten() {
                    let target = Name::from_ascii(target).unwrap();
                    reply.add_answer(Record::from_rdata(
                        query.name().clone(),
                        1,
                        RData::SRV(SRV::new(priority, weight, port, target)),
                    ));
                }
            }
            RecordType::A | RecordType::AAAA => {
                for ip in zone.ips.get(&name).into_iter().flatten() {
                    let rdata = match (ip, query.query_type()) {
                        (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
                        (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
                        _ => continue,
                    };
                    reply.add_answer(Record::from_rdata(query.name().clone(), 1, rdata));
                }
            }
            _ => {}
        }
    }
    reply.set_response_code(if known {
        ResponseCode::NoError
    } else {
        ResponseCode::NXDomain
    });
    reply
}

fn addrs(set: &[Endpoint]) -> Vec<(String, u32)> {
    set.iter().map(|e| (e.addr.clone(), e.weight)).collect()
}

#[tokio::test]
async fn srv_records_give_weighted_endpoints_and_changes_follow_the_ttl() {
    let a = start(ReplicaImpl::new("a")).await;
    let b = start(ReplicaImpl::new("b")).await;
    let c = start(ReplicaImpl::new("c")).await;
    let port = |s: &traitrpc_core::ServerHandle<SocketAddr>| s.local_addr().port();
    let zone = Arc::new(Mutex::new(Zone::default()));
    {
        let mut z = zone.lock().unwrap();
        z.srv.insert(
            "_replica._tcp.test".into(),
            vec![
                (10, 3, port(&a), "a.test."),
                (10, 1, port(&b), "b.test."),
                // A higher priority value is a backup: not used while priority 10 exists.
                (20, 5, 9, "backup.test."),
            ],
        );
        for host in ["a.test", "b.test", "c.test", "backup.test"] {
            z.ips
                .insert(host.into(), vec!["127.0.0.1".parse().unwrap()]);
        }
    }
    let server = dns_server(Arc::clone(&zone)).await;
    let discovery = DnsDiscovery::srv("_replica._tcp.test.")
        .nameserver(server)
        .min_refresh(Duration::from_millis(200))
        .build()
        .unwrap();
    let mut endpoints = discovery.subscribe();
    let set = tokio::time::timeout(Duration::from_secs(5), endpoints.ready())
        .await
        .expect("resolved")
        .unwrap();
    let mut expected = vec![
        (a.local_addr().to_string(), 3),
        (b.local_addr().to_string(), 1),
    ];
    expected.sort();
    assert_eq!(addrs(&set), expected);
    assert_eq!(
        set[0].metadata.get("dns.priority").map(String::as_str),
        Some("10")
    );

    // The SRV weights drive the weighted balancer: exactly 3:1.
    let channel = BalancedChannel::builder(discovery)
        .balancer(WeightedRoundRobin::new())
        .build();
    let client = ReplicaClient::new(channel.clone());
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..400 {
        *counts.entry(client.whoami().await.unwrap()).or_default() += 1;
    }
    assert_eq!((counts["a"], counts["b"]), (300, 100), "{counts:?}");

    // b leaves, c joins: picked up when the 1 s TTL runs out.
    zone.lock().unwrap().srv.insert(
        "_replica._tcp.test".into(),
        vec![(10, 1, port(&a), "a.test."), (10, 1, port(&c), "c.test.")],
    );
    let c_addr = c.local_addr().to_string();
    let took = within(Duration::from_secs(4), || {
        let now: Vec<String> = channel
            .endpoints()
            .into_iter()
            .map(|e| e.endpoint.addr)
            .collect();
        now.contains(&c_addr) && now.len() == 2
    })
    .await
    .expect("the change is seen after the TTL");
    eprintln!("SRV change seen after {took:?}");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10 {
        seen.insert(client.whoami().await.unwrap());
    }
    assert_eq!(seen, ["a", "c"].into_iter().map(String::from).collect());
}

#[tokio::test]
async fn host_records_give_one_endpoint_per_address() {
    let zone = Arc::new(Mutex::new(Zone::default()));
    zone.lock().unwrap().ips.insert(
        "multi.test".into(),
        vec![
            "127.0.0.1".parse().unwrap(),
            "127.0.0.2".parse().unwrap(),
            "::1".parse().unwrap(),
        ],
    );
    let server = dns_server(zone).await;
    let discovery = DnsDiscovery::host("multi.test.", 7000)
        .nameserver(server)
        .build()
        .unwrap();
    let mut endpoints = discovery.subscribe();
    let set = tokio::time::timeout(Duration::from_secs(5), endpoints.ready())
        .await
        .expect("resolved")
        .unwrap();
    let got: Vec<String> = set.iter().map(|e| e.addr.clone()).collect();
    assert_eq!(got, vec!["127.0.0.1:7000", "127.0.0.2:7000", "[::1]:7000"]);
}

#[tokio::test]
async fn an_unknown_name_resolves_to_an_empty_set() {
    let server = dns_server(Arc::new(Mutex::new(Zone::default()))).await;
    let discovery = DnsDiscovery::srv("_nothing._tcp.test.")
        .nameserver(server)
        .build()
        .unwrap();
    let mut endpoints = discovery.subscribe();
    let set = tokio::time::timeout(Duration::from_secs(5), endpoints.ready())
        .await
        .expect("resolved")
        .unwrap();
    assert!(set.is_empty());
}
