//! Starting one call on a server connection: refusals that cost nothing (draining,
//! load shedding, unknown service), the interceptor and argument decoding, then the
//! handler's first poll in place; a handler still pending after it gets a task of its own
//! with its deadline.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::connection::{End, ServerConnection};
use super::interceptor::Rejection;
use super::service::{DispatchError, HandlerFuture, IncomingCall, ReplyTo};
use super::state::{ConnectionState, InFlightSlot};
use crate::context::{self, Context};
use crate::protocol::{go_away, status, RequestFrame};
use crate::util::panic_message;

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> ServerConnection<R, W> {
    /// Starts one request: dispatches it, polls its handler once, and spawns the handler
    /// if it is not done yet. `Err` ends the connection the way it says.
    pub(super) fn start(
        &mut self,
        request: RequestFrame,
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
            unregistered().error(
                status::OVERLOADED,
                "the connection is at its in-flight limit; the call did not run",
            );
            return Ok(());
        }
        if self.state.load.calls.fetch_add(1, Ordering::AcqRel) >= self.config.max_concurrent_calls
        {
            self.state.load.calls.fetch_sub(1, Ordering::AcqRel);
            unregistered().error(
                status::OVERLOADED,
                "the server is at its concurrency limit; the call did not run",
            );
            return Ok(());
        }
        let mut slot = InFlightSlot {
            state: Arc::clone(&self.state),
            counted: false,
        };
        let Some(service) = self.router.get(request.service.as_str()) else {
            unregistered().error(
                status::UNKNOWN_SERVICE,
                &format!("no service named `{}`", request.service),
            );
            return Ok(());
        };
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
        // The interceptor and argument decoding run user code: a panic there must fail
        // the call, not the connection.
        let dispatched = std::panic::catch_unwind(AssertUnwindSafe(|| {
            if let Some(interceptor) = self.router.interceptor() {
                interceptor.intercept(&context).map_err(Refused::Rejected)?;
            }
            service
                .call(
                    request.method.as_str(),
                    IncomingCall::new(
                        request.payload,
                        ReplyTo::registered(Arc::clone(&self.state), id),
                    ),
                )
                .map_err(Refused::Dispatch)
        }));
        let mut handler = match dispatched {
            Ok(Ok(handler)) => handler,
            Ok(Err(Refused::Rejected(Rejection::Unauthenticated(message)))) => {
                unregistered().error(status::UNAUTHENTICATED, &message);
                return Ok(());
            }
            Ok(Err(Refused::Rejected(Rejection::PermissionDenied(message)))) => {
                unregistered().error(status::PERMISSION_DENIED, &message);
                return Ok(());
            }
            Err(panic) => {
                unregistered().error(status::HANDLER_PANICKED, &panic_message(&*panic));
                return Ok(());
            }
            Ok(Err(Refused::Dispatch(DispatchError::UnknownMethod))) => {
                unregistered().error(
                    status::UNKNOWN_METHOD,
                    &format!("`{}` has no method `{}`", service.name(), request.method),
                );
                return Ok(());
            }
            Ok(Err(Refused::Dispatch(DispatchError::InvalidArguments(message)))) => {
                unregistered().error(status::INVALID_ARGUMENTS, &message);
                return Ok(());
            }
        };

        // Poll once here: a handler that is ready at once needs no task, no map entry and
        // no timer. While it is polled it is registered in the inline slot (id 0, which
        // the slot cannot hold, goes to the map).
        if id == 0 {
            self.state.running().insert(id, None);
        } else {
            self.state.inline_call.store(id, Ordering::Release);
        }
        self.state.in_flight.fetch_add(1, Ordering::AcqRel);
        slot.counted = true;
        let (first_poll, pending_context) = context::sync_scope(context, || {
            let polled = std::panic::catch_unwind(AssertUnwindSafe(|| handler.as_mut().poll(cx)));
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
                let unanswered = if id == 0 {
                    running.contains_key(&0)
                } else {
                    self.state
                        .inline_call
                        .compare_exchange(id, 0, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                };
                let task = self.tasks.spawn(context::scope(
                    context,
                    run_handler(handler, deadline, Arc::clone(&self.state), id, slot),
                ));
                if unanswered {
                    running.insert(id, Some(task.abort_handle()));
                }
            }
            (Ok(Poll::Ready(())), _) => finished(&self.state, id),
            // Unreachable: the context is current while the handler is polled.
            (Ok(Poll::Pending), None) => finished(&self.state, id),
            (Err(panic), _) => panicked(&self.state, id, &*panic),
        }
        Ok(())
    }
}

/// Why a call did not get as far as a handler.
enum Refused {
    Rejected(Rejection),
    Dispatch(DispatchError),
}

/// After a handler completed: it answered, unless a hand-written service forgot to.
fn finished(state: &Arc<ConnectionState>, id: u64) {
    ReplyTo::registered(Arc::clone(state), id).error(
        status::INTERNAL,
        "the service finished the call without answering",
    );
}

/// After a handler panicked: answers its call, if it is still unanswered.
fn panicked(state: &Arc<ConnectionState>, id: u64, panic: &(dyn std::any::Any + Send)) {
    let message = panic_message(panic);
    tracing::warn!(id, %message, "handler panicked");
    ReplyTo::registered(Arc::clone(state), id).error(status::HANDLER_PANICKED, &message);
}

/// Runs one handler to completion, its deadline, or a panic, and answers the latter two.
async fn run_handler(
    handler: HandlerFuture,
    deadline: Option<Instant>,
    state: Arc<ConnectionState>,
    id: u64,
    slot: InFlightSlot,
) {
    let guarded = AssertUnwindSafe(handler).catch_unwind();
    let outcome = match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, guarded).await.ok(),
        None => Some(guarded.await),
    };
    match outcome {
        Some(Ok(())) => finished(&state, id),
        Some(Err(panic)) => panicked(&state, id, &*panic),
        None => ReplyTo::registered(state, id).error(
            status::DEADLINE_EXCEEDED,
            "the call's deadline passed before the handler finished",
        ),
    }
    drop(slot);
}
