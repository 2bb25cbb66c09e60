//! The built-in health service, `rpc.health.v1.Health` (the semantics of gRPC's
//! `grpc.health.v1`): `check` a service's status, or `watch` it change. Every [`Server`]
//! hosts it (unless its router has a service of that name already) with a
//! [`HealthReporter`] the application sets ([`ServerHandle::health`]). Every service is
//! SERVING when the server starts; a graceful shutdown turns everything NOT_SERVING first,
//! before the server stops taking calls, so balancers that watch stop sending before the
//! server refuses anything.
//!
//! [`Server`]: crate::Server
//! [`ServerHandle::health`]: crate::ServerHandle::health
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! # #[traitrpc_core::service] pub trait Ping { async fn ping(&self) -> u8; }
//! # struct P; impl Ping for P { async fn ping(&self) -> u8 { 1 } }
//! use traitrpc_core::health::{HealthClient, ServingStatus};
//! let (listener, connector) = traitrpc_core::memory::listener();
//! let server = traitrpc_core::Server::new(PingServer::new(P)).serve(listener, ());
//! let health = HealthClient::new(connector.connect().await?);
//! assert_eq!(health.check("Ping".into()).await?, ServingStatus::Serving);
//! server.health().set("Ping", ServingStatus::NotServing);
//! assert_eq!(health.check("Ping".into()).await?, ServingStatus::NotServing);
//! assert_eq!(health.check("Nope".into()).await?, ServingStatus::ServiceUnknown);
//! # server.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::Streaming;

/// The wire name of the health service.
pub const SERVICE_NAME: &str = "rpc.health.v1.Health";

/// A service's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum ServingStatus {
    /// Not known (not set yet).
    Unknown,
    /// Taking calls.
    Serving,
    /// Not taking calls: send them elsewhere.
    NotServing,
    /// The server hosts no service of that name.
    ServiceUnknown,
}

/// The health service: the status of each service, by name (`""` is the whole server).
#[traitrpc_macros::service(crate = "crate", name = "rpc.health.v1.Health")]
pub trait Health {
    /// The status of `service` (`""`: the whole server); `ServiceUnknown` for a name the
    /// server does not host.
    #[idempotent]
    async fn check(&self, service: String) -> ServingStatus;
    /// The status of `service` now, then each change, until the server stops (its last
    /// item is then `NotServing`).
    async fn watch(&self, service: String) -> Streaming<ServingStatus>;
}

#[derive(Debug, Default, Clone)]
struct Statuses {
    by_service: HashMap<String, ServingStatus>,
    /// The server is stopping: watches send their last status and end.
    closed: bool,
}

impl Statuses {
    fn of(&self, service: &str) -> ServingStatus {
        self.by_service
            .get(service)
            .copied()
            .unwrap_or(ServingStatus::ServiceUnknown)
    }
}

/// Sets the statuses the health service reports. Cheap to clone.
#[derive(Clone, Debug)]
pub struct HealthReporter {
    statuses: Arc<watch::Sender<Statuses>>,
}

impl Default for HealthReporter {
    fn default() -> Self {
        let mut statuses = Statuses::default();
        statuses
            .by_service
            .insert(String::new(), ServingStatus::Serving);
        HealthReporter {
            statuses: Arc::new(watch::Sender::new(statuses)),
        }
    }
}

impl HealthReporter {
    /// A reporter with the whole server (`""`) SERVING and nothing else known.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `service`'s status (`""`: the whole server); watchers see the change.
    pub fn set(&self, service: &str, status: ServingStatus) {
        self.statuses.send_if_modified(|s| {
            let old = s.by_service.insert(service.to_string(), status);
            old != Some(status)
        });
    }

    /// The status `check` reports for `service`.
    pub fn status(&self, service: &str) -> ServingStatus {
        self.statuses.borrow().of(service)
    }

    /// Every service NOT_SERVING, and watches end after telling so: the server is stopping.
    pub fn shutting_down(&self) {
        self.statuses.send_modify(|s| {
            for status in s.by_service.values_mut() {
                *status = ServingStatus::NotServing;
            }
            s.closed = true;
        });
    }

    /// Open `watch` streams.
    pub fn watchers(&self) -> usize {
        // Every watch holds one receiver.
        self.statuses.receiver_count()
    }

    /// Waits until every watch has ended (after [`HealthReporter::shutting_down`]).
    pub async fn watchers_gone(&self) {
        self.statuses.closed().await
    }
}

impl Health for HealthReporter {
    async fn check(&self, service: String) -> ServingStatus {
        self.status(&service)
    }

    async fn watch(&self, service: String) -> Streaming<ServingStatus> {
        let receiver = self.statuses.subscribe();
        // The current status, then each change; after a shutdown, its last status.
        let updates = futures::stream::unfold(
            (receiver, None::<ServingStatus>, false),
            move |(mut receiver, last, done)| {
                let service = service.clone();
                async move {
                    if done {
                        return None;
                    }
                    loop {
                        let (status, closed) = {
                            let statuses = receiver.borrow_and_update();
                            (statuses.of(&service), statuses.closed)
                        };
                        if closed {
                            return Some((status, (receiver, Some(status), true)));
                        }
                        if last != Some(status) {
                            return Some((status, (receiver, Some(status), false)));
                        }
                        if receiver.changed().await.is_err() {
                            return None;
                        }
                    }
                }
            },
        );
        Streaming::from_stream(updates.boxed())
    }
}
