//! Fault injection for tests, compiled only with the `fault-injection` feature (which the
//! release binary does not enable): faults a test switches on in a running node to check
//! that sync recovers from them.

use std::sync::atomic::{AtomicU32, Ordering};

/// Millionths in one: the unit of [`FaultInjection`]'s rates.
const MILLION: u32 = 1_000_000;

/// The faults of one node, shared by its [`crate::Node`] handle (which changes them) and its
/// sync loop (which applies them).
#[derive(Debug, Default)]
pub struct FaultInjection {
    /// Share of incoming gossip messages to drop, in millionths (0: none, a million: all).
    gossip_drop: AtomicU32,
}

impl FaultInjection {
    /// Faults that drop `gossip_drop_rate` (0.0 to 1.0) of incoming gossip.
    pub fn new(gossip_drop_rate: f64) -> Self {
        let faults = FaultInjection::default();
        faults.set_gossip_drop_rate(gossip_drop_rate);
        faults
    }

    /// Drops this share (clamped to 0.0 to 1.0; NaN is 0.0) of incoming gossip from now on.
    pub fn set_gossip_drop_rate(&self, rate: f64) {
        // `as` saturates, and maps NaN to 0.
        let millionths = (rate.clamp(0.0, 1.0) * f64::from(MILLION)).round() as u32;
        self.gossip_drop.store(millionths, Ordering::Relaxed);
    }

    /// Whether to drop the gossip message at hand (a random draw at the current rate).
    pub fn drop_gossip(&self) -> bool {
        let rate = self.gossip_drop.load(Ordering::Relaxed);
        rate > 0 && rand::random_range(0..MILLION) < rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_of_none_and_all_are_exact() {
        let faults = FaultInjection::new(0.0);
        assert!((0..1000).all(|_| !faults.drop_gossip()));
        faults.set_gossip_drop_rate(1.0);
        assert!((0..1000).all(|_| faults.drop_gossip()));
        faults.set_gossip_drop_rate(f64::NAN);
        assert!(!faults.drop_gossip());
        faults.set_gossip_drop_rate(7.0);
        assert!(faults.drop_gossip());
    }
}
