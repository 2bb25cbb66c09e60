//! The client observer (calls) and the attempt middleware (each attempt of a call).

use super::*;

/// One client method's metrics under one target.
struct ClientMethod {
    labels: ClientLabels,
    families: ClientFamilies,
    attempt_started: StripedCounter,
    by_outcome: [OnceLock<ClientOutcome>; Outcome::COUNT],
}

/// One client method's histograms for one outcome.
struct ClientOutcome {
    duration: Histogram,
    /// Attempt layers only: the sizes.
    sizes: Option<(Histogram, Histogram)>,
}

impl ClientMethod {
    fn new(families: &ClientFamilies, labels: ClientLabels) -> Self {
        ClientMethod {
            attempt_started: families.attempt_started.get_or_create(&labels).clone(),
            labels,
            families: families.clone(),
            by_outcome: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    fn outcome(&self, outcome: Outcome, attempts: bool) -> &ClientOutcome {
        self.by_outcome[outcome.index()].get_or_init(|| {
            let labels = ClientStatusLabels {
                service: self.labels.service,
                method: self.labels.method,
                target: Arc::clone(&self.labels.target),
                status: outcome.name(),
            };
            let f = &self.families;
            if attempts {
                ClientOutcome {
                    duration: f.attempt_duration.get_or_create(&labels).clone(),
                    sizes: Some((
                        f.attempt_sent.get_or_create(&labels).clone(),
                        f.attempt_received.get_or_create(&labels).clone(),
                    )),
                }
            } else {
                ClientOutcome {
                    duration: f.call_duration.get_or_create(&labels).clone(),
                    sizes: None,
                }
            }
        })
    }
}

/// The client observer of [`Metrics::client_observer`].
#[derive(Clone)]
pub struct ClientMetrics {
    families: ClientFamilies,
    target: Arc<str>,
    methods: Arc<HandleCache<ClientMethod>>,
}

impl std::fmt::Debug for ClientMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientMetrics")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl ClientMetrics {
    pub(super) fn new(families: ClientFamilies, target: &str) -> Self {
        ClientMetrics {
            families,
            target: target.into(),
            methods: Arc::default(),
        }
    }

    fn make(&self, method: &Method) -> impl FnOnce() -> ClientMethod + '_ {
        let (service, name) = (method.service, method.name);
        move || {
            let labels = ClientLabels {
                service,
                method: name,
                target: Arc::clone(&self.target),
            };
            ClientMethod::new(&self.families, labels)
        }
    }

    fn method(&self, method: &Method) -> Arc<ClientMethod> {
        self.methods
            .get(method.service, method.name, self.make(method))
    }
}

impl ClientObserver for ClientMetrics {
    fn call_ended(&self, call: &ObservedClientCall<'_>) {
        let outcome = call.outcome().map_or(Outcome::CANCELLED, Outcome::of_call);
        let method = call.method();
        self.methods
            .with(method.service, method.name, self.make(method), |handles| {
                handles
                    .outcome(outcome, false)
                    .duration
                    .observe(nanos(call.elapsed()))
            });
    }
}

/// The attempt middleware of [`Metrics::attempt_layer`].
#[derive(Clone, Debug)]
pub struct AttemptMetrics(pub(super) ClientMetrics);

impl ClientMiddleware for AttemptMetrics {
    fn call<'a>(&'a self, call: OutgoingCall<'a>, next: ClientNext<'a>) -> ChannelFuture<'a> {
        let handles = self.0.method(call.method);
        handles.attempt_started.inc();
        let started = Instant::now();
        Box::pin(async move {
            // The arguments' size, measured as they are encoded into the frame.
            let sent = std::sync::atomic::AtomicUsize::new(0);
            let encode = |buf: &mut traitrpc_core::client::BytesMut, codec| {
                let before = buf.len();
                let encoded = (call.encode)(buf, codec);
                sent.store(buf.len() - before, Ordering::Relaxed);
                encoded
            };
            let measured = OutgoingCall {
                encode: &encode,
                ..call
            };
            let outcome = next.run(measured).await;
            let histograms = handles.outcome(Outcome::of_call(&outcome), true);
            histograms.duration.observe(nanos(started.elapsed()));
            if let Some((sent_sizes, received_sizes)) = &histograms.sizes {
                sent_sizes.observe(sent.load(Ordering::Relaxed) as u64);
                let received = outcome.as_ref().map_or(0, |frame| frame.payload.len());
                received_sizes.observe(received as u64);
            }
            outcome
        })
    }
}
