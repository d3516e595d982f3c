//! The contact clock: how long this node has been in contact with at least one peer and,
//! per client, that contact time when the node last heard of it. A client is stale when
//! the node has been in contact with peers for longer than `stale_after` since it last
//! heard of that client. Time the node spends offline or alone makes nobody stale, so a
//! laptop back from a trip does not take every other device for stale and prune what they
//! have not received yet.
//!
//! It lives in memory: after a restart every client counts as heard of at the start, which
//! only delays pruning.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

/// Contact time, and per client the contact time it was last heard of at.
#[derive(Debug, Default)]
pub(crate) struct ContactClock {
    /// Contact time accumulated before `since`.
    total: Duration,
    /// When the current contact began (some peer is connected), if it goes on.
    since: Option<Instant>,
    /// Per client, the contact time when it was last heard of.
    heard: HashMap<Uuid, Duration>,
}

impl ContactClock {
    /// The contact time at `now`.
    pub(crate) fn at(&self, now: Instant) -> Duration {
        self.total
            + self
                .since
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s))
    }

    /// Whether some peer is connected, from `now` on.
    pub(crate) fn set_connected(&mut self, connected: bool, now: Instant) {
        match (connected, self.since) {
            (true, None) => self.since = Some(now),
            (false, Some(s)) => {
                self.total += now.saturating_duration_since(s);
                self.since = None;
            }
            _ => {}
        }
    }

    /// `client` was heard of at `now`.
    pub(crate) fn heard(&mut self, client: Uuid, now: Instant) {
        let t = self.at(now);
        self.heard.insert(client, t);
    }

    /// Whether the node has been in contact for longer than `stale_after` since it last
    /// heard of `client` (or since it started, if it has not).
    pub(crate) fn is_stale(&self, client: &Uuid, now: Instant, stale_after: Duration) -> bool {
        let heard = self.heard.get(client).copied().unwrap_or_default();
        self.at(now).saturating_sub(heard) > stale_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_time_in_contact_makes_a_client_stale() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let s = Duration::from_secs;
        let t0 = Instant::now();
        let mut c = ContactClock::default();
        let stale = Duration::from_secs(10);
        // Alone for an hour: nobody is stale.
        assert!(!c.is_stale(&a, t0 + s(3600), stale));
        c.set_connected(true, t0 + s(3600));
        c.heard(a, t0 + s(3600));
        // In contact (with a) for 11 s, b never heard of: b is stale, a is not.
        c.heard(a, t0 + s(3611));
        assert!(c.is_stale(&b, t0 + s(3611), stale));
        assert!(!c.is_stale(&a, t0 + s(3611), stale));
        // Offline for a week: a is not stale when the node comes back.
        c.set_connected(false, t0 + s(3612));
        assert!(!c.is_stale(&a, t0 + s(700_000), stale));
        c.set_connected(true, t0 + s(700_000));
        assert!(!c.is_stale(&a, t0 + s(700_005), stale));
        assert!(c.is_stale(&a, t0 + s(700_010), stale));
    }
}
