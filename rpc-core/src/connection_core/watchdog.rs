//! Every timer of a connection, in one place and for both sides, as plain state: what a
//! pass of the connection saw and the time go in, what to do comes out ([`Due`]), and
//! [`Watchdog::next_deadline`] says when to look again. No sockets, no tasks, no clock
//! of its own, so each rule is tested with instants chosen by the test.
//!
//! The rules (docs/SECURITY.md lists them with their defaults):
//! - **Keepalive** (protocol version 3 and later): after `interval` without hearing from
//!   the peer, send a `PING`; if nothing is heard within `timeout` after it, the peer is
//!   gone. Any bytes count as hearing from it (the start of a frame still arriving too),
//!   and so does time this side chose not to read: the peer's answer may be waiting
//!   unread behind it. A busy connection therefore never pings.
//! - **Frame timeout** (slowloris): a frame begun must be complete within the limit. The
//!   clock runs only while this side is reading; bytes buffered while it chose not to
//!   read do not start it.
//! - **Write timeout**: answers waiting to be written must make progress within the
//!   limit; a peer that stopped reading is gone.
//! - **Idle timeout**: with nothing in flight and nothing to write, a connection that
//!   received no frame for the limit is closed.
//!
//! A timeout is judged after the pass that read what the socket held, so a connection
//! whose task was stalled (a loaded machine) is judged on what had arrived, not on when
//! its task got to run.

use std::time::Duration;

use tokio::time::Instant;

use crate::keepalive::Keepalive;

/// The limits a connection runs with (`None`: that timer is off).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Limits {
    pub(crate) keepalive: Option<Keepalive>,
    pub(crate) frame_timeout: Option<Duration>,
    pub(crate) write_timeout: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
}

/// What the reading half of one pass saw.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Reading {
    /// Bytes arrived from the peer (part of a frame counts).
    pub(crate) bytes_arrived: bool,
    /// At least one complete frame arrived.
    pub(crate) frame_arrived: bool,
    /// Bytes of an unfinished frame are buffered after the pass.
    pub(crate) partial_frame: bool,
    /// This side stopped reading by its own choice (a bound of its own was reached).
    pub(crate) paused: bool,
}

/// What the writing half of one pass saw.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Writing {
    /// Bytes were written.
    pub(crate) progressed: bool,
    /// Bytes are still waiting to be written.
    pub(crate) pending: bool,
    /// Calls are in flight (the connection is not idle).
    pub(crate) busy: bool,
}

/// A timer that ran out: the connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expired {
    /// A `PING` went unanswered for this long.
    Keepalive(Duration),
    /// A frame took longer than the frame timeout to arrive.
    Frame,
    /// Queued bytes made no progress for the write timeout: the peer stopped reading.
    Write,
    /// Nothing in flight and no frame for the idle timeout.
    Idle,
}

/// What the connection must do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Nothing.
    Nothing,
    /// Send a `PING` carrying this value.
    Ping(u64),
    /// End the connection.
    Expired(Expired),
}

/// The timers of one connection.
#[derive(Debug)]
pub(crate) struct Watchdog {
    limits: Limits,
    /// When the peer was last heard from (any bytes), or this side last paused.
    last_heard: Instant,
    /// When the outstanding `PING` was sent, if one is.
    pinged_at: Option<Instant>,
    pings: u64,
    /// When the last complete frame arrived.
    last_frame_at: Instant,
    /// Since when part of a frame has been waiting for the rest, counted while reading.
    partial_since: Option<Instant>,
    /// When queued bytes last made progress, or none were queued.
    last_write_at: Instant,
    writing: bool,
    busy: bool,
}

impl Watchdog {
    /// The timers of a connection that opened (and heard from its peer) at `now`.
    pub(crate) fn new(limits: Limits, now: Instant) -> Self {
        Watchdog {
            limits,
            last_heard: now,
            pinged_at: None,
            pings: 0,
            last_frame_at: now,
            partial_since: None,
            last_write_at: now,
            writing: false,
            busy: false,
        }
    }

    /// Records the reading half of a pass made at `now`.
    pub(crate) fn read(&mut self, now: Instant, reading: Reading) {
        if reading.bytes_arrived || reading.paused {
            self.last_heard = now;
            self.pinged_at = None;
        }
        if reading.frame_arrived {
            self.last_frame_at = now;
        }
        if !reading.partial_frame || reading.paused {
            self.partial_since = None;
        } else if self.partial_since.is_none() {
            self.partial_since = Some(now);
        }
    }

    /// Records the writing half of a pass made at `now`.
    pub(crate) fn wrote(&mut self, now: Instant, writing: Writing) {
        if writing.progressed || !writing.pending {
            self.last_write_at = now;
        }
        self.writing = writing.pending;
        self.busy = writing.busy;
    }

    /// What is due at `now`, judged on what the passes recorded so far. A `PING` that
    /// is due is taken as sent.
    pub(crate) fn due(&mut self, now: Instant) -> Due {
        if let Some(limit) = self.limits.write_timeout {
            if self.writing && now >= self.last_write_at + limit {
                return Due::Expired(Expired::Write);
            }
        }
        if let (Some(limit), Some(since)) = (self.limits.frame_timeout, self.partial_since) {
            if now >= since + limit {
                return Due::Expired(Expired::Frame);
            }
        }
        if let Some(keepalive) = self.limits.keepalive {
            match self.pinged_at {
                Some(pinged) if now >= pinged + keepalive.timeout => {
                    return Due::Expired(Expired::Keepalive(keepalive.timeout))
                }
                Some(_) => {}
                None if now >= self.last_heard + keepalive.interval => {
                    self.pinged_at = Some(now);
                    self.pings += 1;
                    return Due::Ping(self.pings);
                }
                None => {}
            }
        }
        if let Some(limit) = self.limits.idle_timeout {
            if self.idle() && now >= self.last_frame_at + limit {
                return Due::Expired(Expired::Idle);
            }
        }
        Due::Nothing
    }

    /// The earliest time something could be due, if any timer runs.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let keepalive = self.limits.keepalive.map(|keepalive| match self.pinged_at {
            Some(pinged) => pinged + keepalive.timeout,
            None => self.last_heard + keepalive.interval,
        });
        let frame = self
            .limits
            .frame_timeout
            .zip(self.partial_since)
            .map(|(limit, since)| since + limit);
        let write = self
            .limits
            .write_timeout
            .filter(|_| self.writing)
            .map(|limit| self.last_write_at + limit);
        let idle = self
            .limits
            .idle_timeout
            .filter(|_| self.idle())
            .map(|limit| self.last_frame_at + limit);
        [keepalive, frame, write, idle].into_iter().flatten().min()
    }

    fn idle(&self) -> bool {
        !self.busy && !self.writing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn keepalive_only() -> Limits {
        Limits {
            keepalive: Some(Keepalive::new(secs(10), secs(5))),
            ..Limits::default()
        }
    }

    const BYTES: Reading = Reading {
        bytes_arrived: true,
        frame_arrived: false,
        partial_frame: true,
        paused: false,
    };
    const FRAME: Reading = Reading {
        bytes_arrived: true,
        frame_arrived: true,
        partial_frame: false,
        paused: false,
    };
    const NOTHING: Reading = Reading {
        bytes_arrived: false,
        frame_arrived: false,
        partial_frame: false,
        paused: false,
    };
    const PAUSED: Reading = Reading {
        bytes_arrived: false,
        frame_arrived: false,
        partial_frame: true,
        paused: true,
    };

    #[test]
    fn pings_after_silence_and_gives_up_when_nothing_answers() {
        let t0 = Instant::now();
        let mut dog = Watchdog::new(keepalive_only(), t0);
        assert_eq!(dog.next_deadline(), Some(t0 + secs(10)));
        dog.read(t0 + secs(6), FRAME);
        assert_eq!(dog.due(t0 + secs(10)), Due::Nothing);
        assert_eq!(dog.next_deadline(), Some(t0 + secs(16)));
        assert_eq!(dog.due(t0 + secs(16)), Due::Ping(1));
        assert_eq!(dog.next_deadline(), Some(t0 + secs(21)));
        // Answered in time: the next ping comes one interval after the answer.
        dog.read(t0 + secs(18), FRAME);
        assert_eq!(dog.due(t0 + secs(21)), Due::Nothing);
        assert_eq!(dog.due(t0 + secs(28)), Due::Ping(2));
        assert_eq!(dog.due(t0 + secs(32)), Due::Nothing);
        dog.read(t0 + secs(33), NOTHING);
        assert_eq!(
            dog.due(t0 + secs(33)),
            Due::Expired(Expired::Keepalive(secs(5)))
        );
    }

    /// Issue 21, item 4: a large answer arriving steadily is not silence.
    #[test]
    fn bytes_of_an_unfinished_frame_are_signs_of_life() {
        let t0 = Instant::now();
        let mut dog = Watchdog::new(keepalive_only(), t0);
        for second in 1..=100 {
            dog.read(t0 + secs(second), BYTES);
            assert_eq!(dog.due(t0 + secs(second)), Due::Nothing, "at {second} s");
        }
    }

    /// Issue 21, items 1 and 2: time this side chose not to read is never charged to the
    /// peer, whose answer may be waiting behind what this side did not read.
    #[test]
    fn time_spent_not_reading_by_choice_is_not_silence() {
        let t0 = Instant::now();
        let limits = Limits {
            frame_timeout: Some(secs(3)),
            ..keepalive_only()
        };
        let mut dog = Watchdog::new(limits, t0);
        for second in 1..=100 {
            dog.read(t0 + secs(second), PAUSED);
            assert_eq!(dog.due(t0 + secs(second)), Due::Nothing, "at {second} s");
        }
        // Reading again, nothing arrives: the usual interval and timeout apply from the
        // last pause.
        dog.read(t0 + secs(101), NOTHING);
        assert_eq!(dog.due(t0 + secs(109)), Due::Nothing);
        assert_eq!(dog.due(t0 + secs(110)), Due::Ping(1));
        assert_eq!(
            dog.due(t0 + secs(115)),
            Due::Expired(Expired::Keepalive(secs(5)))
        );
    }

    /// A ping judged on a pass that found the answer waiting in the socket (the task was
    /// stalled past the timeout) is answered, not timed out.
    #[test]
    fn a_late_task_is_judged_on_what_had_arrived() {
        let t0 = Instant::now();
        let mut dog = Watchdog::new(keepalive_only(), t0);
        assert_eq!(dog.due(t0 + secs(10)), Due::Ping(1));
        // The task next runs 30 s later and reads the PONG in that pass.
        dog.read(t0 + secs(40), FRAME);
        assert_eq!(dog.due(t0 + secs(40)), Due::Nothing);
        assert_eq!(dog.next_deadline(), Some(t0 + secs(50)));
    }

    /// Issue 21, item 3: the pass that reached a limit also buffered the start of the next
    /// frame; while this side does not read, the frame timeout does not run.
    #[test]
    fn the_frame_timeout_runs_only_while_reading() {
        let t0 = Instant::now();
        let limits = Limits {
            frame_timeout: Some(secs(30)),
            ..Limits::default()
        };
        let mut dog = Watchdog::new(limits, t0);
        dog.read(t0, PAUSED);
        assert_eq!(dog.next_deadline(), None);
        assert_eq!(dog.due(t0 + secs(100)), Due::Nothing);
        // Reading again with the frame unfinished: 30 s from now.
        dog.read(t0 + secs(100), BYTES);
        assert_eq!(dog.next_deadline(), Some(t0 + secs(130)));
        dog.read(t0 + secs(110), BYTES);
        assert_eq!(dog.due(t0 + secs(129)), Due::Nothing);
        assert_eq!(dog.due(t0 + secs(130)), Due::Expired(Expired::Frame));
    }

    #[test]
    fn a_frame_completed_in_time_stops_the_frame_timeout() {
        let t0 = Instant::now();
        let limits = Limits {
            frame_timeout: Some(secs(30)),
            ..Limits::default()
        };
        let mut dog = Watchdog::new(limits, t0);
        dog.read(t0, BYTES);
        dog.read(t0 + secs(29), FRAME);
        assert_eq!(dog.due(t0 + secs(31)), Due::Nothing);
        // The next frame's clock starts when its first bytes arrive.
        dog.read(t0 + secs(40), BYTES);
        assert_eq!(dog.due(t0 + secs(69)), Due::Nothing);
        assert_eq!(dog.due(t0 + secs(70)), Due::Expired(Expired::Frame));
    }

    #[test]
    fn the_write_timeout_charges_only_writes_that_make_no_progress() {
        let t0 = Instant::now();
        let limits = Limits {
            write_timeout: Some(secs(30)),
            ..Limits::default()
        };
        let mut dog = Watchdog::new(limits, t0);
        let stuck = Writing {
            progressed: false,
            pending: true,
            busy: true,
        };
        let moving = Writing {
            progressed: true,
            ..stuck
        };
        // Slow but moving: never expires.
        for second in (0..300).step_by(20) {
            dog.wrote(t0 + secs(second), moving);
            assert_eq!(dog.due(t0 + secs(second + 19)), Due::Nothing);
        }
        dog.wrote(t0 + secs(300), stuck);
        assert_eq!(dog.next_deadline(), Some(t0 + secs(310)));
        assert_eq!(dog.due(t0 + secs(309)), Due::Nothing);
        assert_eq!(dog.due(t0 + secs(310)), Due::Expired(Expired::Write));
    }

    #[test]
    fn idle_means_nothing_in_flight_nothing_to_write_and_no_frame() {
        let t0 = Instant::now();
        let limits = Limits {
            idle_timeout: Some(secs(60)),
            ..Limits::default()
        };
        let mut dog = Watchdog::new(limits, t0);
        let busy = Writing {
            progressed: false,
            pending: false,
            busy: true,
        };
        let idle = Writing {
            busy: false,
            ..busy
        };
        dog.read(t0 + secs(10), FRAME);
        dog.wrote(t0 + secs(10), busy);
        // A call running for ten minutes keeps the connection.
        assert_eq!(dog.next_deadline(), None);
        assert_eq!(dog.due(t0 + secs(600)), Due::Nothing);
        // Once it ends, the idle period counts from the last frame.
        dog.wrote(t0 + secs(600), idle);
        assert_eq!(dog.due(t0 + secs(600)), Due::Expired(Expired::Idle));
        dog.read(t0 + secs(601), FRAME);
        assert_eq!(dog.next_deadline(), Some(t0 + secs(661)));
        assert_eq!(dog.due(t0 + secs(660)), Due::Nothing);
    }

    #[test]
    fn the_next_deadline_is_the_earliest_timer() {
        let t0 = Instant::now();
        let limits = Limits {
            keepalive: Some(Keepalive::new(secs(60), secs(20))),
            frame_timeout: Some(secs(30)),
            write_timeout: Some(secs(45)),
            idle_timeout: Some(secs(300)),
        };
        let mut dog = Watchdog::new(limits, t0);
        assert_eq!(dog.next_deadline(), Some(t0 + secs(60)));
        dog.read(t0 + secs(10), BYTES);
        assert_eq!(dog.next_deadline(), Some(t0 + secs(40)));
        dog.read(t0 + secs(11), FRAME);
        let nothing_queued = Writing {
            progressed: false,
            pending: false,
            busy: true,
        };
        dog.wrote(t0 + secs(10), nothing_queued);
        dog.wrote(
            t0 + secs(11),
            Writing {
                progressed: false,
                pending: true,
                busy: true,
            },
        );
        assert_eq!(dog.next_deadline(), Some(t0 + secs(55)));
    }
}
