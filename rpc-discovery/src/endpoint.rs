//! [`Endpoint`]: one replica of a service as discovery reports it, and [`Change`]s
//! between two endpoint sets.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The largest weight a balancer gives an endpoint (larger ones are clamped to it).
pub const MAX_WEIGHT: u32 = 1000;

/// One replica of a service: where to connect, how much traffic it should get relative to
/// the others, and free-form metadata (zone, version, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// `host:port` (or `ip:port`), passed to `traitrpc_transport_tcp::connect_with_config`.
    /// It identifies the endpoint: two endpoints with the same address are the same one.
    pub addr: String,
    /// Relative weight for the weighted balancers (default 1; the balancers use it
    /// clamped to 1..=[`MAX_WEIGHT`]).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Free-form labels; discovery implementations add their own (for example the SRV
    /// target name).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

fn default_weight() -> u32 {
    1
}

impl Endpoint {
    /// An endpoint at `addr` with weight 1 and no metadata.
    pub fn new(addr: impl Into<String>) -> Self {
        Endpoint {
            addr: addr.into(),
            weight: 1,
            metadata: BTreeMap::new(),
        }
    }

    /// The same endpoint with weight `weight`.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// The same endpoint with the metadata entry `key` = `value` added.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The weight the balancers use: [`Endpoint::weight`] clamped to 1..=[`MAX_WEIGHT`],
    /// so one bad registration cannot starve the others or make rings huge.
    pub fn effective_weight(&self) -> u32 {
        self.weight.clamp(1, MAX_WEIGHT)
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Self {
        Endpoint::new(addr.to_string())
    }
}

impl From<&str> for Endpoint {
    fn from(addr: &str) -> Self {
        Endpoint::new(addr)
    }
}

impl From<String> for Endpoint {
    fn from(addr: String) -> Self {
        Endpoint::new(addr)
    }
}

/// How an endpoint set changed, endpoint by endpoint (keyed by address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new endpoint.
    Added(Endpoint),
    /// An endpoint that left the set.
    Removed(Endpoint),
    /// An endpoint whose weight or metadata changed.
    Updated {
        /// As it was.
        old: Endpoint,
        /// As it is now.
        new: Endpoint,
    },
}

/// The changes that turn `old` into `new`: removals first, then updates and additions in
/// the order of `new`.
pub fn diff(old: &[Endpoint], new: &[Endpoint]) -> Vec<Change> {
    let old_by_addr: HashMap<&str, &Endpoint> = old.iter().map(|e| (e.addr.as_str(), e)).collect();
    let new_by_addr: HashMap<&str, &Endpoint> = new.iter().map(|e| (e.addr.as_str(), e)).collect();
    let mut changes: Vec<Change> = old
        .iter()
        .filter(|e| !new_by_addr.contains_key(e.addr.as_str()))
        .map(|e| Change::Removed(e.clone()))
        .collect();
    for e in new {
        match old_by_addr.get(e.addr.as_str()) {
            None => changes.push(Change::Added(e.clone())),
            Some(before) if *before != e => changes.push(Change::Updated {
                old: (*before).clone(),
                new: e.clone(),
            }),
            Some(_) => {}
        }
    }
    changes
}

/// Sorts by address and keeps the last of several endpoints with the same address.
pub(crate) fn normalize(endpoints: impl IntoIterator<Item = Endpoint>) -> Vec<Endpoint> {
    let mut by_addr: BTreeMap<String, Endpoint> = BTreeMap::new();
    for e in endpoints {
        by_addr.insert(e.addr.clone(), e);
    }
    by_addr.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_reports_each_kind_of_change() {
        let a = Endpoint::new("a:1");
        let b = Endpoint::new("b:1");
        let c = Endpoint::new("c:1");
        let b2 = b.clone().with_weight(5);
        let changes = diff(&[a.clone(), b.clone()], &[b2.clone(), c.clone()]);
        assert_eq!(
            changes,
            vec![
                Change::Removed(a),
                Change::Updated { old: b, new: b2 },
                Change::Added(c)
            ]
        );
    }

    #[test]
    fn normalize_sorts_and_dedups() {
        let set = normalize([
            Endpoint::new("b:1"),
            Endpoint::new("a:1"),
            Endpoint::new("b:1").with_weight(3),
        ]);
        assert_eq!(
            set,
            vec![Endpoint::new("a:1"), Endpoint::new("b:1").with_weight(3)]
        );
    }
}
