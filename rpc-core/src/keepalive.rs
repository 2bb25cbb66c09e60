//! Liveness of a connection (protocol version 3): when nothing has arrived from the peer
//! for [`Keepalive::interval`], send a `PING`; when nothing arrives within
//! [`Keepalive::timeout`] after it, the peer is considered gone (a crashed host, a
//! black-holed network path, a process that stopped reading) and the connection is
//! closed, failing its calls with a typed error instead of leaving them to their
//! deadlines.
//!
//! Any bytes count as a sign of life (part of a frame too), and so does time the
//! connection chose not to read, so a busy connection never pings. The timer is
//! re-armed lazily: activity only stamps the time of the last frame.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Keepalive settings of a connection: ping after `interval` of silence from the peer,
/// give up `timeout` after the ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Silence from the peer after which a `PING` is sent.
    pub interval: Duration,
    /// How long the `PING` may go unanswered (no frame at all arriving) before the
    /// connection is closed.
    pub timeout: Duration,
}

impl Keepalive {
    /// Ping after `interval` of silence, close `timeout` after an unanswered ping.
    pub fn new(interval: Duration, timeout: Duration) -> Self {
        Keepalive {
            interval: interval.max(Duration::from_millis(1)),
            timeout: timeout.max(Duration::from_millis(1)),
        }
    }
}

/// What the connection task must do now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Due {
    /// Nothing yet.
    Nothing,
    /// Send a `PING` with this data.
    Ping(u64),
    /// The ping went unanswered: close the connection.
    TimedOut,
}

/// The keepalive state of one connection, driven by its task.
pub(crate) struct KeepaliveTimer {
    settings: Keepalive,
    sleep: Pin<Box<Sleep>>,
    /// When the last frame from the peer arrived.
    last_heard: Instant,
    /// When the outstanding ping was sent, if one is.
    pinged_at: Option<Instant>,
    pings: u64,
}

impl KeepaliveTimer {
    /// A timer for a connection that just heard from its peer at `now`.
    pub(crate) fn new(settings: Keepalive, now: Instant) -> Self {
        KeepaliveTimer {
            settings,
            sleep: Box::pin(tokio::time::sleep_until(now + settings.interval)),
            last_heard: now,
            pinged_at: None,
            pings: 0,
        }
    }

    /// The timeout, for the error a timed-out connection reports.
    pub(crate) fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    /// The peer was heard from at `now` (any bytes), or this side chose not to read.
    pub(crate) fn heard(&mut self, now: Instant) {
        self.last_heard = now;
        self.pinged_at = None;
    }

    /// Checks the timer (registering the task to be woken when it is next due).
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Due {
        if self.sleep.as_mut().poll(cx).is_pending() {
            return Due::Nothing;
        }
        let now = Instant::now();
        match self.pinged_at {
            Some(pinged) if now >= pinged + self.settings.timeout => {
                // Keep the timer armed: the caller may still hear from the peer in the
                // read pass that judges this timeout (`heard`), and the connection then
                // goes on and needs its next ping.
                self.rearm(now + self.settings.timeout, cx);
                Due::TimedOut
            }
            Some(pinged) => {
                self.rearm(pinged + self.settings.timeout, cx);
                Due::Nothing
            }
            None if now >= self.last_heard + self.settings.interval => {
                self.pinged_at = Some(now);
                self.pings += 1;
                self.rearm(now + self.settings.timeout, cx);
                Due::Ping(self.pings)
            }
            None => {
                self.rearm(self.last_heard + self.settings.interval, cx);
                Due::Nothing
            }
        }
    }

    fn rearm(&mut self, at: Instant, cx: &mut Context<'_>) {
        self.sleep.as_mut().reset(at);
        // Register the re-armed timer with the task; if `at` has passed already (the
        // task was preempted), no timer will wake it, so look again at once.
        if self.sleep.as_mut().poll(cx).is_ready() {
            cx.waker().wake_by_ref();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pings_after_silence_and_times_out_without_an_answer() {
        let settings = Keepalive::new(Duration::from_secs(10), Duration::from_secs(5));
        let mut timer = KeepaliveTimer::new(settings, Instant::now());
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(timer.poll(&mut cx), Due::Nothing);
        // Heard from the peer at 6 s: no ping at 10 s, one at 16 s.
        tokio::time::advance(Duration::from_secs(6)).await;
        timer.heard(Instant::now());
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(timer.poll(&mut cx), Due::Nothing);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(timer.poll(&mut cx), Due::Ping(1));
        // An answer in time resets; silence after the next ping times out.
        tokio::time::advance(Duration::from_secs(2)).await;
        timer.heard(Instant::now());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(timer.poll(&mut cx), Due::Ping(2));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(timer.poll(&mut cx), Due::Nothing);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(timer.poll(&mut cx), Due::TimedOut);
    }

    /// Counts its wakes.
    struct Wakes(std::sync::atomic::AtomicUsize);
    impl std::task::Wake for Wakes {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_answered_in_the_judging_read_pass_keeps_the_timer_running() {
        let settings = Keepalive::new(Duration::from_secs(10), Duration::from_secs(5));
        let mut timer = KeepaliveTimer::new(settings, Instant::now());
        let wakes = std::sync::Arc::new(Wakes(Default::default()));
        let waker = std::task::Waker::from(std::sync::Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(timer.poll(&mut cx), Due::Ping(1));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(timer.poll(&mut cx), Due::TimedOut);
        // The read pass that judges it finds the answer: the connection goes on, and its
        // task must still be woken for the next ping.
        timer.heard(Instant::now());
        let before = wakes.0.load(std::sync::atomic::Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(
            wakes.0.load(std::sync::atomic::Ordering::SeqCst) > before,
            "the timer woke the task"
        );
        assert_eq!(timer.poll(&mut cx), Due::Nothing);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(timer.poll(&mut cx), Due::Ping(2));
    }
}
