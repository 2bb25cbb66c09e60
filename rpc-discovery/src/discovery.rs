//! The discovery abstraction: a [`Discovery`] publishes the current endpoint set of one
//! service through a [`Publisher`]; anyone holding an [`Endpoints`] subscription reads
//! the current set and waits for [`Change`]s. [`StaticDiscovery`] is the built-in,
//! nothing-to-install implementation.

use std::sync::Arc;

use tokio::sync::watch;

use crate::endpoint::{diff, normalize, Change, Endpoint};

/// A source of endpoints for one service: a static list, DNS, etcd, or your own.
///
/// Implementations keep the set current in the background (usually a task they spawn
/// when built, stopped when they are dropped) and publish it with a [`Publisher`].
/// A [`BalancedChannel`](crate::BalancedChannel) keeps its discovery alive as long as it
/// lives itself.
pub trait Discovery: Send + Sync + 'static {
    /// A subscription to the endpoint set.
    fn subscribe(&self) -> Endpoints;
}

impl<D: Discovery + ?Sized> Discovery for Arc<D> {
    fn subscribe(&self) -> Endpoints {
        (**self).subscribe()
    }
}

type Set = Option<Arc<[Endpoint]>>;

/// The writing side of an endpoint set, for [`Discovery`] implementations.
#[derive(Debug)]
pub struct Publisher {
    tx: watch::Sender<Set>,
}

impl Default for Publisher {
    fn default() -> Self {
        Self::new()
    }
}

impl Publisher {
    /// A publisher whose set is not resolved yet: subscribers wait in
    /// [`Endpoints::ready`] until the first [`publish`](Publisher::publish).
    pub fn new() -> Self {
        Publisher {
            tx: watch::Sender::new(None),
        }
    }

    /// Replaces the set (sorted by address; of several endpoints with one address the
    /// last wins). Subscribers are woken only if it differs from the previous set.
    /// Returns whether it did.
    pub fn publish(&self, endpoints: impl IntoIterator<Item = Endpoint>) -> bool {
        let set: Arc<[Endpoint]> = normalize(endpoints).into();
        self.tx.send_if_modified(|current| {
            if current.as_deref() == Some(&*set) {
                false
            } else {
                *current = Some(set);
                true
            }
        })
    }

    /// The last published set (`None` before the first).
    pub fn current(&self) -> Option<Arc<[Endpoint]>> {
        self.tx.borrow().clone()
    }

    /// A new subscription.
    pub fn subscribe(&self) -> Endpoints {
        Endpoints {
            rx: self.tx.subscribe(),
            seen: None,
        }
    }
}

/// A subscription to a service's endpoint set: read the current set, wait for the first
/// one, or wait for the next change. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Endpoints {
    rx: watch::Receiver<Set>,
    /// The set this subscription last reported (for [`Endpoints::changed`]).
    seen: Set,
}

impl Endpoints {
    /// The current set, or `None` if discovery has not resolved anything yet.
    pub fn current(&self) -> Option<Arc<[Endpoint]>> {
        self.rx.borrow().clone()
    }

    /// Waits until discovery has resolved the set at least once and returns it. `None`
    /// if the discovery stopped before that.
    pub async fn ready(&mut self) -> Option<Arc<[Endpoint]>> {
        let set = self.rx.wait_for(Option::is_some).await.ok()?.clone();
        self.seen = set.clone();
        set
    }

    /// Waits for the set to differ from the one this subscription last reported (through
    /// `ready` or `changed`) and returns the changes. The first call after subscribing
    /// returns as soon as the set is resolved, reporting every endpoint as added (an
    /// empty list if the resolved set is empty). `None` once the discovery has stopped.
    pub async fn changed(&mut self) -> Option<Vec<Change>> {
        loop {
            let current = self.rx.borrow_and_update().clone();
            if let Some(current) = current {
                let first = self.seen.is_none();
                let changes = diff(self.seen.as_deref().unwrap_or(&[]), &current);
                if first || !changes.is_empty() {
                    self.seen = Some(current);
                    return Some(changes);
                }
            }
            self.rx.changed().await.ok()?;
        }
    }
}

/// A fixed list of endpoints, which the program may replace with [`StaticDiscovery::set`].
/// The default discovery: nothing to install or run.
#[derive(Debug, Clone)]
pub struct StaticDiscovery {
    publisher: Arc<Publisher>,
}

impl StaticDiscovery {
    /// The list `endpoints` (addresses or [`Endpoint`]s).
    pub fn new<E: Into<Endpoint>>(endpoints: impl IntoIterator<Item = E>) -> Self {
        let publisher = Publisher::new();
        publisher.publish(endpoints.into_iter().map(Into::into));
        StaticDiscovery {
            publisher: Arc::new(publisher),
        }
    }

    /// Replaces the list; channels built on this discovery pick the change up at once.
    pub fn set<E: Into<Endpoint>>(&self, endpoints: impl IntoIterator<Item = E>) {
        self.publisher
            .publish(endpoints.into_iter().map(Into::into));
    }

    /// The current list.
    pub fn endpoints(&self) -> Arc<[Endpoint]> {
        self.publisher.current().unwrap_or_else(|| Arc::from([]))
    }
}

impl Discovery for StaticDiscovery {
    fn subscribe(&self) -> Endpoints {
        self.publisher.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscription_reports_initial_set_then_changes() {
        let discovery = StaticDiscovery::new(["a:1", "b:1"]);
        let mut sub = discovery.subscribe();
        let first = sub.changed().await.unwrap();
        assert_eq!(first.len(), 2);
        discovery.set(["b:1", "c:1"]);
        let next = sub.changed().await.unwrap();
        assert_eq!(
            next,
            vec![
                Change::Removed(Endpoint::new("a:1")),
                Change::Added(Endpoint::new("c:1"))
            ]
        );
        // Publishing the same set again wakes nobody.
        discovery.set(["c:1", "b:1"]);
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(50), sub.changed()).await;
        assert!(waited.is_err());
    }

    #[tokio::test]
    async fn ready_waits_for_the_first_publication() {
        let publisher = Publisher::new();
        let mut sub = publisher.subscribe();
        assert!(sub.current().is_none());
        let waiter = tokio::spawn(async move { sub.ready().await });
        tokio::task::yield_now().await;
        publisher.publish([Endpoint::new("x:1")]);
        let set = waiter.await.unwrap().unwrap();
        assert_eq!(&*set, &[Endpoint::new("x:1")]);
    }
}
