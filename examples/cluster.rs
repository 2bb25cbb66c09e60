//! Three replicas of a service behind one balanced client, which prints which replica
//! answered each call; then one replica leaves and the calls go to the other two.
//!
//! With etcd (`--etcd http://127.0.0.1:2379`, or `RPC_ETCD=...` in the environment) the
//! replicas register themselves in etcd and the client discovers them there; without it
//! (or if etcd does not answer) the client gets a static list of addresses.
//!
//! ```sh
//! cargo run --example cluster
//! cargo run --example cluster -- --etcd http://127.0.0.1:2379
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use traitrpc::discovery::etcd::{
    self, EtcdClient, EtcdDiscovery, RegisterOptions, RegisteredServer,
};
use traitrpc::discovery::{balance, BalancedChannel, StaticDiscovery};
use traitrpc::{service, ServerHandle};

#[service]
pub trait Greeter {
    /// Greets `name`, saying which replica answered.
    #[idempotent]
    async fn hello(&self, name: String) -> String;
}

struct Replica {
    name: String,
}

impl Greeter for Replica {
    async fn hello(&self, name: String) -> String {
        format!("{} says hello to {name}", self.name)
    }
}

/// A running replica, registered in etcd or not.
enum Running {
    Registered(RegisteredServer),
    Plain(ServerHandle<SocketAddr>),
}

impl Running {
    fn addr(&self) -> SocketAddr {
        match self {
            Running::Registered(s) => s.local_addr(),
            Running::Plain(s) => s.local_addr(),
        }
    }

    async fn shutdown(self) {
        match self {
            // Deregister first, so clients stop picking it, then drain.
            Running::Registered(s) => s.shutdown().await,
            Running::Plain(s) => s.shutdown().await,
        }
    }
}

/// The etcd endpoint from `--etcd URL` or `RPC_ETCD`, if etcd answers there.
async fn etcd() -> Option<EtcdClient> {
    let args: Vec<String> = std::env::args().collect();
    let endpoint = args
        .iter()
        .position(|a| a == "--etcd")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| std::env::var("RPC_ETCD").ok())?;
    let check = async {
        let client = EtcdClient::builder([endpoint.as_str()])
            .request_timeout(Duration::from_secs(2))
            .build()?;
        client.get_prefix(b"\0").await?;
        Ok::<_, etcd::EtcdError>(client)
    };
    match check.await {
        Ok(client) => Some(client),
        _ => {
            println!("etcd at {endpoint} does not answer; using a static list instead");
            None
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let etcd = etcd().await;
    let service = "greeter-example";

    let mut replicas = Vec::new();
    for i in 1..=3 {
        let implementation = GreeterServer::new(Replica {
            name: format!("replica-{i}"),
        });
        let running = match &etcd {
            Some(client) => Running::Registered(
                etcd::serve(
                    "127.0.0.1:0",
                    implementation,
                    client,
                    service,
                    RegisterOptions::new().ttl(Duration::from_secs(5)),
                )
                .await?,
            ),
            None => Running::Plain(traitrpc::serve("127.0.0.1:0", implementation).await?),
        };
        println!("replica-{i} listening on {}", running.addr());
        replicas.push(running);
    }

    // The only difference from a single server is how the client is built.
    let channel = match &etcd {
        Some(client) => {
            println!("discovering `{service}` in etcd");
            BalancedChannel::builder(EtcdDiscovery::new(client.clone(), service))
        }
        None => {
            println!("using a static list of the three addresses");
            BalancedChannel::builder(StaticDiscovery::new(replicas.iter().map(|r| r.addr())))
        }
    }
    .balancer(balance::RoundRobin::new())
    .build();
    channel.ready().await;
    let greeter = GreeterClient::new(channel.clone());

    for call in 1..=6 {
        println!(
            "call {call}: {}",
            greeter.hello(format!("call {call}")).await?
        );
    }

    let leaving = replicas.remove(0);
    println!("replica-1 shuts down ({})", leaving.addr());
    leaving.shutdown().await;
    for call in 7..=10 {
        println!(
            "call {call}: {}",
            greeter.hello(format!("call {call}")).await?
        );
    }

    // Consistent hashing: one user's calls stick to one replica.
    let sticky = GreeterClient::new(
        BalancedChannel::builder(StaticDiscovery::new(replicas.iter().map(|r| r.addr())))
            .balancer(balance::ConsistentHash::new())
            .build(),
    )
    .with_routing_key("user-42");
    for call in 11..=13 {
        println!(
            "call {call} (key user-42): {}",
            sticky.hello(format!("call {call}")).await?
        );
    }

    for replica in replicas {
        replica.shutdown().await;
    }
    Ok(())
}
