//! Explicit peers: dialed at start, redialed with capped exponential backoff after a dial
//! fails or the connection is lost. A pure state machine: the swarm task feeds it events
//! and the current time and asks which entries are due.

use std::time::Duration;

use libp2p::{Multiaddr, PeerId, multiaddr::Protocol, swarm::ConnectionId};
use tokio::time::Instant;

/// One configured address.
#[derive(Debug)]
struct Entry {
    addr: Multiaddr,
    /// From `/p2p/<id>` in the address, or learnt at the first connection.
    peer_id: Option<PeerId>,
    /// Next delay to wait after a failure.
    backoff: Duration,
    /// When to dial next; `None` while dialing or connected.
    next_at: Option<Instant>,
    /// The dial in flight.
    dialing: Option<ConnectionId>,
    /// The address is our own: never dial it.
    is_self: bool,
}

/// The redial schedule of all explicit peers.
#[derive(Debug)]
pub(crate) struct Redialer {
    entries: Vec<Entry>,
    initial: Duration,
    max: Duration,
}

/// The peer id at the end of a multiaddr, if any.
pub(crate) fn peer_id_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(id)) => Some(id),
        _ => None,
    }
}

impl Redialer {
    /// All `addrs` are due at `now`.
    pub(crate) fn new(addrs: &[Multiaddr], initial: Duration, max: Duration, now: Instant) -> Self {
        let entries = addrs
            .iter()
            .map(|addr| Entry {
                addr: addr.clone(),
                peer_id: peer_id_of(addr),
                backoff: initial,
                next_at: Some(now),
                dialing: None,
                is_self: false,
            })
            .collect();
        Self {
            entries,
            initial,
            max,
        }
    }

    /// Entries due for a dial at `now`: `(index, address, known peer id)`.
    pub(crate) fn due(&self, now: Instant) -> Vec<(usize, Multiaddr, Option<PeerId>)> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| !e.is_self && e.dialing.is_none())
            .filter(|(_, e)| e.next_at.is_some_and(|at| at <= now))
            .map(|(i, e)| (i, e.addr.clone(), e.peer_id))
            .collect()
    }

    /// A dial of entry `index` started.
    pub(crate) fn dialing(&mut self, index: usize, connection: ConnectionId) {
        if let Some(e) = self.entries.get_mut(index) {
            e.dialing = Some(connection);
            e.next_at = None;
        }
    }

    /// Entry `index` need not be dialed: its peer is already connected.
    pub(crate) fn already_connected(&mut self, index: usize) {
        if let Some(e) = self.entries.get_mut(index) {
            e.next_at = None;
            e.backoff = self.initial;
        }
    }

    /// Entry `index` is our own address.
    pub(crate) fn mark_self(&mut self, index: usize) {
        if let Some(e) = self.entries.get_mut(index) {
            e.is_self = true;
            e.next_at = None;
        }
    }

    /// Whether `peer` is one of the explicit peers.
    pub(crate) fn knows(&self, peer: &PeerId) -> bool {
        self.entries
            .iter()
            .any(|e| e.peer_id.as_ref() == Some(peer))
    }

    /// A connection to `peer` is up (dialed as `connection`, or inbound).
    pub(crate) fn on_connected(&mut self, peer: PeerId, connection: ConnectionId) {
        for e in &mut self.entries {
            if e.dialing == Some(connection) {
                e.dialing = None;
                e.peer_id = Some(peer);
            }
            if e.peer_id == Some(peer) {
                e.next_at = None;
                e.backoff = self.initial;
            }
        }
    }

    /// The dial `connection` failed: schedule the next attempt. Returns the entry's address.
    /// `is_self` marks an address that turned out to be our own.
    pub(crate) fn on_dial_failed(
        &mut self,
        connection: ConnectionId,
        now: Instant,
        is_self: bool,
    ) -> Option<Multiaddr> {
        let max = self.max;
        let e = self
            .entries
            .iter_mut()
            .find(|e| e.dialing == Some(connection))?;
        e.dialing = None;
        if is_self {
            e.is_self = true;
        } else {
            schedule(e, now, max);
        }
        Some(e.addr.clone())
    }

    /// A dial of entry `index` could not even start.
    pub(crate) fn on_dial_error(&mut self, index: usize, now: Instant) {
        let max = self.max;
        if let Some(e) = self.entries.get_mut(index) {
            e.dialing = None;
            schedule(e, now, max);
        }
    }

    /// The last connection to `peer` closed: schedule a redial of its entries.
    pub(crate) fn on_disconnected(&mut self, peer: PeerId, now: Instant) {
        let max = self.max;
        for e in &mut self.entries {
            if e.peer_id == Some(peer) && e.dialing.is_none() && !e.is_self {
                schedule(e, now, max);
            }
        }
    }
}

/// Next attempt after the current backoff plus up to 25% jitter; the backoff then doubles
/// up to `max`.
fn schedule(e: &mut Entry, now: Instant, max: Duration) {
    let jitter_cap = u64::try_from(e.backoff.as_millis() / 4).unwrap_or(0);
    let jitter = Duration::from_millis(rand::random_range(0..=jitter_cap));
    e.next_at = Some(now + e.backoff + jitter);
    e.backoff = (e.backoff * 2).min(max);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().expect("valid test multiaddr")
    }

    #[test]
    fn backoff_doubles_and_is_capped_and_resets_on_connect() {
        let now = Instant::now();
        let initial = Duration::from_millis(100);
        let max = Duration::from_millis(350);
        let mut r = Redialer::new(&[addr("/ip4/127.0.0.1/tcp/1")], initial, max, now);
        assert_eq!(r.due(now).len(), 1);

        let mut t = now;
        let mut delays = Vec::new();
        for i in 0..5 {
            let conn = ConnectionId::new_unchecked(i);
            r.dialing(0, conn);
            assert!(
                r.due(t + Duration::from_secs(100)).is_empty(),
                "no redial while dialing"
            );
            r.on_dial_failed(conn, t, false).expect("known dial");
            let at = r.entries[0].next_at.expect("scheduled");
            delays.push(at - t);
            t = at;
        }
        let bases = [100, 200, 350, 350, 350];
        for (d, base) in delays.iter().zip(bases) {
            let base = Duration::from_millis(base);
            assert!(*d >= base && *d <= base + base / 4, "{d:?} vs {base:?}");
        }

        let peer = PeerId::random();
        let conn = ConnectionId::new_unchecked(99);
        r.dialing(0, conn);
        r.on_connected(peer, conn);
        assert!(r.knows(&peer));
        assert!(
            r.due(t + Duration::from_secs(100)).is_empty(),
            "connected: nothing due"
        );
        r.on_disconnected(peer, t);
        let at = r.entries[0].next_at.expect("redial scheduled");
        assert!(
            at - t <= initial + initial / 4,
            "backoff reset after a connection"
        );
    }

    #[test]
    fn peer_id_is_read_from_the_address_and_self_is_never_redialed() {
        let peer = PeerId::random();
        let a = addr(&format!("/ip4/127.0.0.1/tcp/1/p2p/{peer}"));
        assert_eq!(peer_id_of(&a), Some(peer));
        assert_eq!(peer_id_of(&addr("/dns4/node1/tcp/4001")), None);

        let now = Instant::now();
        let mut r = Redialer::new(&[a], Duration::from_millis(10), Duration::from_secs(1), now);
        let conn = ConnectionId::new_unchecked(1);
        r.dialing(0, conn);
        r.on_dial_failed(conn, now, true);
        assert!(r.due(now + Duration::from_secs(10)).is_empty());
    }
}
