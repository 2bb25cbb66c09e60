//! Starting one call on a server connection: refusals that cost nothing (draining,
//! load shedding, unknown service), the interceptor and argument decoding, then the
//! handler's first poll in place; a handler still pending after it gets a task of its own
//! with its deadline.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context as TaskContext, Poll};
use std::time::Duration;

use futures::FutureExt;
use tokio::time::Instant;

use super::connection::{End, ServerConnection};
use super::middleware::{MiddlewareFuture, Next};
use super::observer::CallWatch;
use super::service::{Answered, HandlerFuture, IncomingCall, ReplyTo};
use super::state::{ConnectionState, InFlightSlot, RunningCall};
use crate::compression::decompress;
use crate::context::{self, Context};
use crate::protocol::{flags, go_away, status, RequestFrame, SCHEMA_VERSION};
use crate::util::panic_message;

impl ServerConnection {
    /// Starts one request: dispatches it, polls its handler once, and spawns the handler
    /// if it is not done yet. `Err` ends the connection the way it says.
    pub(super) fn start(
        &mut self,
        mut request: RequestFrame,
        now: Instant,
        cx: &mut TaskContext<'_>,
    ) -> Result<(), End> {
        let id = request.id;
        self.last_id = self.last_id.max(id);
        let unregistered = || ReplyTo::unregistered(Arc::clone(&self.state), id);
        if self.draining {
            unregistered().error(status::SHUTTING_DOWN, "the server is shutting down");
            return Ok(());
        }
        if self.state.running().contains_key(&id) {
            self.go_away(
                go_away::PROTOCOL_ERROR,
                &format!("call id {id} is already in flight"),
            );
            return Err(End::Gone);
        }
        // Load shedding, before any work is spent on the call: beyond the server-wide
        // limit, or beyond this connection's limit (reached while the connection is still
        // read because streams need their items and credit), the call is refused, not
        // queued. It did not run, so the caller may retry it elsewhere.
        if !self.state.has_room() {
            self.state.load.shed.fetch_add(1, Ordering::Relaxed);
            unregistered().error(
                status::OVERLOADED,
                "the connection is at its in-flight limit; the call did not run",
            );
            return Ok(());
        }
        let admission = &self.state.load.admission;
        if self.state.load.calls.fetch_add(1, Ordering::AcqRel) >= admission.limit() {
            self.state.load.calls.fetch_sub(1, Ordering::AcqRel);
            self.state.load.shed.fetch_add(1, Ordering::Relaxed);
            unregistered().error(
                status::OVERLOADED,
                "the server is at its concurrency limit; the call did not run",
            );
            return Ok(());
        }
        let mut slot = InFlightSlot {
            state: Arc::clone(&self.state),
            counted: false,
            started: None,
        };
        // Deadline-aware shedding: a call with less time left than the server's latency
        // without load cannot finish in time; refuse it now rather than run it too late.
        // (`now` is when the request arrived; a parked request has waited since.)
        if let (Some(baseline), 1..) = (admission.baseline(), request.budget_micros) {
            let waited = Instant::now().saturating_duration_since(now);
            let left = Duration::from_micros(request.budget_micros).saturating_sub(waited);
            if left < baseline {
                self.state.load.shed.fetch_add(1, Ordering::Relaxed);
                unregistered().error(
                    status::OVERLOADED,
                    "the call's deadline is too close for it to finish here; it did not run",
                );
                return Ok(());
            }
        }
        let Some(service) = self.router.get(request.service.as_str()) else {
            unregistered().error(
                status::UNKNOWN_SERVICE,
                &format!("no service named `{}`", request.service),
            );
            return Ok(());
        };
        // Compressed arguments are expanded only for a call that passed every refusal
        // above, which cost nothing; a bad payload is refused like arguments that do not
        // decode (the handler never runs, the connection stays).
        if request.compressed {
            match decompress(
                std::mem::take(&mut request.payload),
                self.config.max_frame_size,
            ) {
                Ok(payload) => request.payload = payload,
                Err(e) => {
                    unregistered().error(status::INVALID_ARGUMENTS, &e.to_string());
                    return Ok(());
                }
            }
        }
        // The caller's budget, capped by the server's own limit (0 = the caller set none).
        let budget = match request.budget_micros {
            0 => None,
            micros => Some(Duration::from_micros(micros)),
        };
        let budget = match (budget, self.config.max_call_duration) {
            (Some(b), Some(max)) => Some(b.min(max)),
            (b, max) => b.or(max),
        };
        let deadline = budget.and_then(|b| now.checked_add(b));
        let context = Context::new(
            id,
            deadline,
            service.name(),
            request.method.clone(),
            request.flags,
            request.metadata,
            Arc::clone(&self.info),
        );
        let payload_len = request.payload.len();
        self.last_instance += 1;
        let instance = self.last_instance;
        let mut reply = ReplyTo::registered(Arc::clone(&self.state), id, instance);
        // A call in JSON by name (version 6: the client's schema of the method differs
        // from ours) goes through the JSON dispatcher and is answered in JSON.
        let translated;
        let service = if request.flags & flags::JSON != 0 && self.state.version >= SCHEMA_VERSION {
            reply = reply.in_json();
            translated = crate::json::native::translated(service);
            &translated
        } else {
            service
        };
        let call = IncomingCall::new(request.payload, reply);
        // Layers and observers label calls by the method's name as the service declares
        // it: a bounded set.
        let layers = self.router.middleware();
        let observers = self.router.observers();
        let known_method = (layers.is_some() || observers.is_some())
            .then(|| {
                service
                    .methods()
                    .iter()
                    .copied()
                    .find(|m| *m == request.method.as_str())
            })
            .flatten();
        let watch = observers.map(|observers| {
            CallWatch::start(
                observers,
                id,
                service.name(),
                known_method,
                payload_len,
                now,
            )
        });
        // A call refused before it runs: answered at once, and ended for its observers.
        let refuse = |watch: Option<CallWatch>, code: u8, message: &str| {
            let answered = unregistered().error(code, message);
            if let Some(watch) = watch {
                watch.end(&answered);
            }
        };
        let mut handler = match layers {
            // With middleware, the chain is the handler: it runs before the arguments are
            // decoded (by its end, the terminal) and may refuse the call, which is then
            // answered with the refusal's status.
            Some(layers) => {
                let next = Next::to_service(
                    Arc::clone(layers),
                    context.clone(),
                    known_method,
                    payload_len,
                    Arc::clone(service),
                    call,
                );
                // A layer runs its synchronous part (an interceptor, say) here: a panic
                // in it fails the call, not the connection.
                match std::panic::catch_unwind(AssertUnwindSafe(|| next.run())) {
                    Ok(chain) => Running::Chain {
                        chain,
                        reply: Some(Arc::clone(&self.state)),
                        call: (id, instance),
                    },
                    Err(panic) => {
                        refuse(watch, status::HANDLER_PANICKED, &panic_message(&*panic));
                        return Ok(());
                    }
                }
            }
            // Without, argument decoding runs here, on the connection task. It runs user
            // code (`Deserialize`): a panic there must fail the call, not the connection.
            None => {
                let dispatched = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    service.call(request.method.as_str(), call)
                }));
                match dispatched {
                    Ok(Ok(handler)) => Running::Handler(handler),
                    Ok(Err(error)) => {
                        let rejection =
                            error.into_rejection(service.name(), request.method.as_str());
                        refuse(watch, rejection.code(), rejection.message());
                        return Ok(());
                    }
                    Err(panic) => {
                        refuse(watch, status::HANDLER_PANICKED, &panic_message(&*panic));
                        return Ok(());
                    }
                }
            }
        };

        // Poll once here: a handler that is ready at once needs no task, no map entry and
        // no timer. While it is polled it is registered in the inline slot.
        self.state.inline_call.store(instance, Ordering::Release);
        self.state.in_flight.fetch_add(1, Ordering::AcqRel);
        slot.counted = true;
        if admission.is_adaptive() {
            slot.started = Some(now);
        }
        let (first_poll, pending_context) = context::sync_scope(context, || {
            let polled =
                std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(&mut handler).poll(cx)));
            // Only a handler that goes on needs its context again.
            let context = matches!(polled, Ok(Poll::Pending))
                .then(context::current)
                .flatten();
            (polled, context)
        });
        match (first_poll, pending_context) {
            (Ok(Poll::Pending), Some(context)) => {
                // Move the call from the inline slot to the map, under the map's lock so
                // that nobody can claim it before its task is recorded. If the handler
                // already answered, it runs on unregistered.
                let mut running = self.state.running();
                let unanswered = self
                    .state
                    .inline_call
                    .compare_exchange(instance, 0, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                let handler = run_handler(
                    handler,
                    watch,
                    deadline,
                    (Arc::clone(&self.state), id, instance),
                    slot,
                );
                if unanswered {
                    let task = self.tasks.spawn(context::scope(context, handler));
                    let task = Some(task.abort_handle());
                    running.insert(id, RunningCall { instance, task });
                } else {
                    // It answered already but goes on (a hand-written service): no CANCEL
                    // can reach it by its id, so it lives at most as long as its
                    // connection.
                    let ended = self.state.ended.clone();
                    self.tasks.spawn(context::scope(context, async move {
                        tokio::select! {
                            _ = handler => {}
                            _ = ended.cancelled() => {}
                        }
                    }));
                }
            }
            (Ok(Poll::Ready(answered)), _) => {
                let answered = finished(&self.state, (id, instance), answered);
                if let Some(watch) = watch {
                    // Its answer leaves with the batch's write: it ends then.
                    self.batch_ends.push(watch, answered);
                }
            }
            // Unreachable: the context is current while the handler is polled.
            (Ok(Poll::Pending), None) => {
                let answered = finished(&self.state, (id, instance), Answered::unanswered());
                if let Some(watch) = watch {
                    watch.end(&answered);
                }
            }
            (Err(panic), _) => {
                let answered = panicked(&self.state, (id, instance), &*panic);
                if let Some(watch) = watch {
                    watch.end(&answered);
                }
            }
        }
        Ok(())
    }
}

/// A call's future on the server: its handler, or the middleware chain ending in it.
enum Running {
    Handler(HandlerFuture),
    Chain {
        chain: MiddlewareFuture,
        /// Where a refusal of the chain is answered (taken when it is).
        reply: Option<Arc<ConnectionState>>,
        /// The call's id and instance.
        call: (u64, u64),
    },
}

impl Future for Running {
    type Output = Answered;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Answered> {
        match &mut *self {
            Running::Handler(handler) => handler.as_mut().poll(cx),
            Running::Chain { chain, reply, call } => match ready!(Pin::new(chain).poll(cx)) {
                Ok(answered) => Poll::Ready(answered),
                Err(rejection) => {
                    let state = reply
                        .take()
                        .expect("a call future polled after it completed");
                    let (id, instance) = *call;
                    Poll::Ready(
                        ReplyTo::registered(state, id, instance)
                            .error(rejection.code(), rejection.message()),
                    )
                }
            },
        }
    }
}

/// After the handler of call `id`, running as `instance`, completed: it answered
/// (`answered`), unless a hand-written service forgot to. Returns the call's answer.
fn finished(
    state: &Arc<ConnectionState>,
    (id, instance): (u64, u64),
    answered: Answered,
) -> Answered {
    let late = ReplyTo::registered(Arc::clone(state), id, instance).error(
        status::INTERNAL,
        "the service finished the call without answering",
    );
    if late.status().is_some() {
        late
    } else {
        answered
    }
}

/// After a handler panicked: answers its call, if it is still unanswered.
fn panicked(
    state: &Arc<ConnectionState>,
    (id, instance): (u64, u64),
    panic: &(dyn std::any::Any + Send),
) -> Answered {
    let message = panic_message(panic);
    tracing::warn!(id, %message, "handler panicked");
    ReplyTo::registered(Arc::clone(state), id, instance).error(status::HANDLER_PANICKED, &message)
}

/// An observed call's watch inside its task: ended with the answer when the task
/// finishes; dropped with the task, it ends with the answer the connection gave the call
/// when it stopped it (INTERRUPTED at a shutdown's end), else unanswered (a CANCEL, the
/// connection lost).
struct TaskWatch {
    watch: Option<CallWatch>,
    state: Arc<ConnectionState>,
}

impl Drop for TaskWatch {
    fn drop(&mut self) {
        if let Some(watch) = self.watch.take() {
            match self.state.interrupted.get() {
                Some(answered) => watch.end(answered),
                None => drop(watch),
            }
        }
    }
}

/// Runs one handler to completion, its deadline, or a panic, and answers the latter two.
/// An observed call's watch ends with how it was answered ([`TaskWatch`]).
async fn run_handler(
    handler: Running,
    watch: Option<CallWatch>,
    deadline: Option<Instant>,
    (state, id, instance): (Arc<ConnectionState>, u64, u64),
    slot: InFlightSlot,
) {
    let mut watch = TaskWatch {
        watch,
        state: Arc::clone(&state),
    };
    let guarded = AssertUnwindSafe(handler).catch_unwind();
    let outcome = match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, guarded).await.ok(),
        None => Some(guarded.await),
    };
    let answered = match outcome {
        Some(Ok(answered)) => finished(&state, (id, instance), answered),
        Some(Err(panic)) => panicked(&state, (id, instance), &*panic),
        None => ReplyTo::registered(state, id, instance).error(
            status::DEADLINE_EXCEEDED,
            "the call's deadline passed before the handler finished",
        ),
    };
    if let Some(watch) = watch.watch.take() {
        watch.end(&answered);
    }
    drop(slot);
}
