//! Outlier ejection of one endpoint, as a state machine that knows nothing of
//! connections: attempts report a [`Verdict`]; after [`OutlierPolicy::consecutive_failures`]
//! failures in a row the endpoint is ejected for a period that doubles with each
//! ejection in a row; when the period ends one call at a time is let through as a probe,
//! whose success restores the endpoint and whose failure ejects it again for longer.

use tokio::time::Instant;

use crate::policy::OutlierPolicy;

/// How an attempt went, for outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The endpoint answered.
    Success,
    /// The endpoint failed the call: it could not be reached, the connection was lost or
    /// went silent, it shed the call, its handler panicked, or it missed the deadline.
    Failure,
    /// Says nothing about the endpoint (it is draining, the call was cancelled).
    Neutral,
}

/// What [`Health::record`] did, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    /// Nothing changed.
    None,
    /// The endpoint was ejected until the given time.
    Ejected(Instant),
    /// The endpoint returned to rotation.
    Restored,
}

/// The health of one endpoint.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Failures in a row.
    failures: u32,
    /// Ejections in a row (reset by a success).
    ejections: u32,
    /// Set while ejected; once past, the endpoint is on probation until a probe succeeds.
    ejected_until: Option<Instant>,
    /// A probe is in flight.
    probing: bool,
}

impl Health {
    /// Whether the endpoint is ejected (or on probation).
    pub(crate) fn is_ejected(&self) -> bool {
        self.ejected_until.is_some()
    }

    /// When its ejection period ends, if it is ejected.
    pub(crate) fn ejected_until(&self) -> Option<Instant> {
        self.ejected_until
    }

    /// Whether it can take a call now: not ejected, or on probation with no probe out.
    #[cfg(test)]
    pub(crate) fn available(&self, now: Instant) -> bool {
        match self.ejected_until {
            None => true,
            Some(until) => until <= now && !self.probing,
        }
    }

    /// Admits a call chosen for this endpoint: `Some(true)` if it is the probe of an
    /// endpoint on probation, `Some(false)` for an ordinary call (or a forced one, when
    /// every endpoint is ejected), `None` if it cannot take it after all.
    pub(crate) fn admit(&mut self, now: Instant, forced: bool) -> Option<bool> {
        match self.ejected_until {
            None => Some(false),
            Some(_) if forced => Some(false),
            Some(until) if until > now || self.probing => None,
            Some(_) => {
                self.probing = true;
                Some(true)
            }
        }
    }

    /// A probe's attempt ended without a verdict (it was dropped).
    pub(crate) fn probe_abandoned(&mut self) {
        self.probing = false;
    }

    /// Updates the health after an attempt.
    pub(crate) fn record(
        &mut self,
        policy: &OutlierPolicy,
        verdict: Verdict,
        probe: bool,
        now: Instant,
    ) -> Transition {
        if probe {
            self.probing = false;
        }
        match verdict {
            // Already out and not probed: the success of a call sent before the ejection
            // (or forced through because every endpoint is out) says nothing of the
            // endpoint now; only a probe restores it.
            Verdict::Success if self.ejected_until.is_some() && !probe => Transition::None,
            Verdict::Success => {
                let was_ejected = self.ejected_until.is_some();
                *self = Health::default();
                if was_ejected {
                    Transition::Restored
                } else {
                    Transition::None
                }
            }
            Verdict::Failure => match self.ejected_until {
                // A failed probe: out again, for longer.
                Some(_) if probe => self.eject(policy, now),
                // Already out: failures of calls sent before the ejection.
                Some(_) => Transition::None,
                None => {
                    self.failures += 1;
                    if policy.consecutive_failures > 0
                        && self.failures >= policy.consecutive_failures
                    {
                        self.eject(policy, now)
                    } else {
                        Transition::None
                    }
                }
            },
            Verdict::Neutral => Transition::None,
        }
    }

    fn eject(&mut self, policy: &OutlierPolicy, now: Instant) -> Transition {
        self.ejections += 1;
        let until = now + policy.ejection(self.ejections);
        self.ejected_until = Some(until);
        self.failures = 0;
        Transition::Ejected(until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_success_of_a_call_sent_before_the_ejection_does_not_restore() {
        let policy = OutlierPolicy {
            consecutive_failures: 2,
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(8),
        };
        let now = Instant::now();
        let mut health = Health::default();
        health.record(&policy, Verdict::Failure, false, now);
        assert!(matches!(
            health.record(&policy, Verdict::Failure, false, now),
            Transition::Ejected(_)
        ));
        // A slow call sent before the ejection comes back fine: still out.
        assert_eq!(
            health.record(&policy, Verdict::Success, false, now),
            Transition::None
        );
        assert!(health.is_ejected());
        // A probe's success restores it.
        assert_eq!(
            health.record(&policy, Verdict::Success, true, now),
            Transition::Restored
        );
        assert!(!health.is_ejected());
    }

    #[tokio::test(start_paused = true)]
    async fn ejects_after_failures_probes_one_at_a_time_and_restores() {
        let policy = OutlierPolicy {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(8),
        };
        let mut health = Health::default();
        let now = Instant::now();
        for _ in 0..2 {
            assert_eq!(
                health.record(&policy, Verdict::Failure, false, now),
                Transition::None
            );
        }
        // A success in between resets the count.
        health.record(&policy, Verdict::Success, false, now);
        for _ in 0..2 {
            health.record(&policy, Verdict::Failure, false, now);
        }
        let ejected = health.record(&policy, Verdict::Failure, false, now);
        assert_eq!(ejected, Transition::Ejected(now + Duration::from_secs(1)));
        assert!(!health.available(now));
        assert_eq!(health.admit(now, false), None);
        // Forced (every endpoint ejected): still usable.
        assert_eq!(health.admit(now, true), Some(false));

        // After the period: one probe at a time; a failed probe doubles the period.
        let later = now + Duration::from_secs(1);
        assert!(health.available(later));
        assert_eq!(health.admit(later, false), Some(true));
        assert!(!health.available(later), "one probe at a time");
        assert_eq!(
            health.record(&policy, Verdict::Failure, true, later),
            Transition::Ejected(later + Duration::from_secs(2))
        );
        let after = later + Duration::from_secs(2);
        assert_eq!(health.admit(after, false), Some(true));
        assert_eq!(
            health.record(&policy, Verdict::Success, true, after),
            Transition::Restored
        );
        assert!(!health.is_ejected());
        assert!(health.available(after));
    }
}
