//! The hybrid logical clock: uhlc with the client UUID as its id, a configurable maximum
//! drift, and a physical clock that tests can inject.
//!
//! uhlc takes its physical clock as a plain `fn() -> NTP64`, which cannot capture state. A
//! [`ManualClock`] therefore lives in one of a fixed set of global slots, each with its own
//! `fn`, so tests running side by side each drive their own time.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uhlc::{HLC, HLCBuilder, ID, NTP64};
use uuid::Uuid;

/// An operation's timestamp: HLC time, then author. Ordered by time, then by author, which
/// is the last-writer-wins order of every register.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Hlc {
    /// NTP64 time (seconds since the UNIX epoch in the high 32 bits, fraction below).
    pub time: u64,
    /// The client that took the timestamp.
    pub author: Uuid,
}

impl Hlc {
    /// The smallest timestamp: older than every real one.
    pub const ZERO: Hlc = Hlc {
        time: 0,
        author: Uuid::nil(),
    };

    /// The 24-byte form stored in SQLite: big-endian time, then the author's bytes, so that
    /// bytewise order equals timestamp order.
    pub fn to_bytes(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[..8].copy_from_slice(&self.time.to_be_bytes());
        out[8..].copy_from_slice(self.author.as_bytes());
        out
    }

    /// Parses the stored form.
    pub fn from_bytes(bytes: &[u8]) -> Result<Hlc, BadTimestamp> {
        if bytes.len() != 24 {
            return Err(BadTimestamp { len: bytes.len() });
        }
        let mut time = [0u8; 8];
        time.copy_from_slice(&bytes[..8]);
        let mut author = [0u8; 16];
        author.copy_from_slice(&bytes[8..]);
        Ok(Hlc {
            time: u64::from_be_bytes(time),
            author: Uuid::from_bytes(author),
        })
    }

    /// A timestamp at `time` by the client `Uuid::from_u128(author)`, for unit tests.
    #[cfg(test)]
    pub(crate) fn at(time: u64, author: u128) -> Hlc {
        Hlc {
            time,
            author: Uuid::from_u128(author),
        }
    }

    /// The timestamp as the seed writes it: RFC 3339 time, a slash, the author.
    pub fn to_rfc3339(&self) -> String {
        format!(
            "{}/{}",
            NTP64(self.time).to_string_rfc3339_lossy(),
            self.author.simple()
        )
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// Where the clock reads physical time.
#[derive(Debug, Clone, Default)]
pub enum PhysicalClock {
    /// The system clock.
    #[default]
    System,
    /// A manual clock driven by the test.
    Manual(ManualClock),
}

const SLOTS: usize = 32;
/// Per slot: the offset from the system clock, in NTP64 units (two's complement).
static SLOT_TIME: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];
static SLOT_USED: [AtomicBool; SLOTS] = [const { AtomicBool::new(false) }; SLOTS];

macro_rules! slot_fns {
    ($($i:literal),*) => {
        const SLOT_FNS: [fn() -> NTP64; SLOTS] = [$(|| NTP64(system_now().0.wrapping_add(SLOT_TIME[$i].load(Ordering::SeqCst)))),*];
    };
}
slot_fns!(
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    26, 27, 28, 29, 30, 31
);

/// A physical clock for tests: the system clock shifted by an offset the test moves, so a
/// node can be put behind or ahead of the others. Clones share the offset. At most 32
/// exist at once; [`ManualClock::release`] frees a slot.
#[derive(Debug, Clone)]
pub struct ManualClock {
    slot: usize,
}

impl ManualClock {
    /// A clock equal to the system clock (offset zero). `None` when all slots are taken.
    pub fn new() -> Option<ManualClock> {
        for slot in 0..SLOTS {
            if SLOT_USED[slot]
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                SLOT_TIME[slot].store(0, Ordering::SeqCst);
                return Some(ManualClock { slot });
            }
        }
        None
    }

    /// The clock's current time.
    pub fn now(&self) -> NTP64 {
        (SLOT_FNS[self.slot])()
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        SLOT_TIME[self.slot].fetch_add(NTP64::from(by).0, Ordering::SeqCst);
    }

    /// Moves the clock back.
    pub fn rewind(&self, by: Duration) {
        SLOT_TIME[self.slot].fetch_sub(NTP64::from(by).0, Ordering::SeqCst);
    }

    /// Frees the slot for another clock.
    pub fn release(self) {
        SLOT_USED[self.slot].store(false, Ordering::SeqCst);
    }

    fn as_fn(&self) -> fn() -> NTP64 {
        SLOT_FNS[self.slot]
    }
}

fn system_now() -> NTP64 {
    uhlc::system_time_clock()
}

/// A client's clock.
pub struct Clock {
    hlc: HLC,
    author: Uuid,
    max_drift: Duration,
    physical: fn() -> NTP64,
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Clock")
            .field("author", &self.author)
            .field("max_drift", &self.max_drift)
            .finish()
    }
}

/// A stored timestamp that is not 24 bytes long (the store reports it as corruption).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("timestamp of {len} bytes, expected 24")]
pub struct BadTimestamp {
    /// The length found.
    pub len: usize,
}

/// A remote timestamp too far ahead of this clock.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("timestamp {ts} is {ahead_ms} ms ahead of this clock (max drift {max_ms} ms)")]
pub struct DriftError {
    /// The rejected timestamp.
    pub ts: Hlc,
    /// How far ahead it was.
    pub ahead_ms: u64,
    /// The configured maximum.
    pub max_ms: u64,
}

impl Clock {
    /// A clock for `author` with the given maximum drift and physical clock.
    pub fn new(author: Uuid, max_drift: Duration, physical: PhysicalClock) -> Clock {
        let clock_fn = match &physical {
            PhysicalClock::System => system_now as fn() -> NTP64,
            PhysicalClock::Manual(m) => m.as_fn(),
        };
        // A nil UUID cannot be an uhlc id; clients never have one (see Store::open).
        let id = ID::try_from(author.as_bytes()).unwrap_or_else(|_| ID::rand());
        let hlc = HLCBuilder::new()
            .with_id(id)
            .with_max_delta(max_drift)
            .with_clock(clock_fn)
            .build();
        Clock {
            hlc,
            author,
            max_drift,
            physical: clock_fn,
        }
    }

    /// A new timestamp, later than every one taken or seen before.
    pub fn now(&self) -> Hlc {
        let ts = self.hlc.new_timestamp();
        Hlc {
            time: ts.get_time().0,
            author: self.author,
        }
    }

    /// Folds a remote timestamp into the clock, or rejects it when it is more than
    /// `max_drift` ahead of the physical clock.
    pub fn observe(&self, ts: Hlc) -> Result<(), DriftError> {
        let id = ID::try_from(ts.author.as_bytes()).unwrap_or_else(|_| ID::rand());
        let remote = uhlc::Timestamp::new(NTP64(ts.time), id);
        self.hlc.update_with_timestamp(&remote).map_err(|_| {
            let now = (self.physical)();
            let ahead = NTP64(ts.time.saturating_sub(now.0)).to_duration();
            DriftError {
                ts,
                ahead_ms: ahead.as_millis() as u64,
                max_ms: self.max_drift.as_millis() as u64,
            }
        })
    }

    /// Whether a remote timestamp is within `max_drift` of the physical clock, without
    /// folding it into the clock (gossip is checked this way before it is forwarded).
    pub fn check(&self, ts: Hlc) -> Result<(), DriftError> {
        let now = (self.physical)().0;
        let bound = now.saturating_add(NTP64::from(self.max_drift).0);
        if ts.time <= bound {
            return Ok(());
        }
        Err(DriftError {
            ts,
            ahead_ms: NTP64(ts.time - now).to_duration().as_millis() as u64,
            max_ms: self.max_drift.as_millis() as u64,
        })
    }

    /// The author of this clock's timestamps.
    pub fn author(&self) -> Uuid {
        self.author
    }

    /// The physical time now, as NTP64.
    pub fn physical_now(&self) -> u64 {
        (self.physical)().0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_order_is_timestamp_order() {
        let a = Hlc {
            time: 5,
            author: Uuid::from_u128(9),
        };
        let b = Hlc {
            time: 6,
            author: Uuid::from_u128(1),
        };
        let c = Hlc {
            time: 6,
            author: Uuid::from_u128(2),
        };
        assert!(a < b && b < c);
        assert!(a.to_bytes() < b.to_bytes() && b.to_bytes() < c.to_bytes());
        assert_eq!(Hlc::from_bytes(&c.to_bytes()).unwrap(), c);
    }

    #[test]
    fn drift_is_rejected_until_the_clock_catches_up() {
        let manual = ManualClock::new().unwrap();
        let me = Clock::new(
            Uuid::from_u128(1),
            Duration::from_millis(100),
            PhysicalClock::Manual(manual.clone()),
        );
        let ahead = Hlc {
            time: manual.now().0 + NTP64::from(Duration::from_secs(1)).0,
            author: Uuid::from_u128(2),
        };
        let err = me.observe(ahead).unwrap_err();
        assert!(err.ahead_ms >= 900, "{err}");
        assert_eq!(me.check(ahead).unwrap_err().ts, ahead);
        manual.advance(Duration::from_millis(1000));
        me.check(ahead).unwrap();
        me.observe(ahead).unwrap();
        assert!(me.now() > ahead);
        manual.release();
    }
}
