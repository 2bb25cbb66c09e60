//! The server observer: every call's start, duration, sizes and stream items.

use super::*;

/// One server method's metrics.
pub(super) struct ServerMethod {
    service: &'static str,
    method: &'static str,
    families: ServerFamilies,
    started: StripedCounter,
    by_outcome: [OnceLock<ServerOutcome>; Outcome::COUNT],
    items_sent: OnceLock<StripedCounter>,
    items_received: OnceLock<StripedCounter>,
}

/// One server method's histograms for one outcome.
struct ServerOutcome {
    duration: Histogram,
    received: Histogram,
    sent: Histogram,
}

impl ServerMethod {
    fn new(families: &ServerFamilies, service: &'static str, method: &'static str) -> Self {
        ServerMethod {
            service,
            method,
            started: families
                .started
                .get_or_create(&MethodLabels { service, method })
                .clone(),
            families: families.clone(),
            by_outcome: std::array::from_fn(|_| OnceLock::new()),
            items_sent: OnceLock::new(),
            items_received: OnceLock::new(),
        }
    }

    fn outcome(&self, outcome: Outcome) -> &ServerOutcome {
        self.by_outcome[outcome.index()].get_or_init(|| {
            let labels = StatusLabels {
                service: self.service,
                method: self.method,
                status: outcome.name(),
            };
            ServerOutcome {
                duration: self.families.duration.get_or_create(&labels).clone(),
                received: self.families.received.get_or_create(&labels).clone(),
                sent: self.families.sent.get_or_create(&labels).clone(),
            }
        })
    }

    fn items(&self, direction: &'static str) -> &StripedCounter {
        let cell = if direction == "sent" {
            &self.items_sent
        } else {
            &self.items_received
        };
        cell.get_or_init(|| {
            self.families
                .items
                .get_or_create(&ItemLabels {
                    service: self.service,
                    method: self.method,
                    direction,
                })
                .clone()
        })
    }
}

/// The server observer of [`Metrics::server_observer`].
#[derive(Clone)]
pub struct ServerMetrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ServerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerMetrics").finish_non_exhaustive()
    }
}

impl ServerMetrics {
    pub(super) fn new(inner: Arc<Inner>) -> Self {
        ServerMetrics { inner }
    }

    fn with_method<R>(&self, call: &ObservedCall, f: impl FnOnce(&ServerMethod) -> R) -> R {
        let (service, method) = (call.service(), call.known_method().unwrap_or(OTHER));
        self.inner.server_methods.with(
            service,
            method,
            || ServerMethod::new(&self.inner.server, service, method),
            f,
        )
    }
}

impl ServerObserver for ServerMetrics {
    fn call_started(&self, call: &ObservedCall) {
        self.with_method(call, |method| method.started.inc());
    }

    fn call_ended(&self, call: &ObservedCall, answered: &Answered, elapsed: Duration) {
        let outcome = answered
            .status()
            .map_or(Outcome::CANCELLED, Outcome::of_status);
        self.with_method(call, |method| {
            let histograms = method.outcome(outcome);
            histograms.duration.observe(nanos(elapsed));
            histograms.received.observe(call.request_bytes() as u64);
            histograms.sent.observe(answered.response_bytes() as u64);
            if answered.items_sent() > 0 {
                method.items("sent").inc_by(answered.items_sent());
            }
            if answered.items_received() > 0 {
                method.items("received").inc_by(answered.items_received());
            }
        });
    }
}
