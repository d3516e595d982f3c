//! The node's table of connected peers: for each, its client UUID (once its device is
//! known, see [`crate::device`]), the address and discovery of its connection, where its pull stands ([`PullState`]), the progress of a running
//! pull and the schema it announced. It is the only copy: the sync actor changes it, pull tasks report their progress
//! into it, and `/v1/status` reads a [`PeerView`] of each peer from it.
//!
//! The network layer keeps its own record of connections (that is how it dials, blocks and
//! reports them); this table is what the node knows of a peer once the network says it is
//! connected, and it forgets the peer when the network says it is gone.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::{Arc, Mutex, MutexGuard};

use libp2p::{Multiaddr, PeerId};
use murmur_p2p::Discovery;
use murmur_store::SchemaVersion;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::protocol::Refusal;

/// Where a peer's pull stands. Pulls are started by the sync actor, at most one per peer and
/// [`PULLS_CAP`](super::PULLS_CAP) at once; a pull asked for meanwhile is remembered, not
/// run twice or dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullState {
    /// No pull runs or is due.
    #[default]
    Idle,
    /// A pull runs.
    Running,
    /// A pull runs, and another was asked for since it started (the peer announced more, or
    /// sent a gap): it starts when this one ends.
    RunningThenAgain,
    /// A pull is due but every slot was taken: it starts when a running pull ends.
    Waiting,
}

impl PullState {
    /// A pull is asked for; `slot_free` says whether fewer than `PULLS_CAP` pulls run.
    /// Returns whether the caller must start one now (the state is then `Running`).
    pub fn request(&mut self, slot_free: bool) -> bool {
        match *self {
            PullState::Running | PullState::RunningThenAgain => {
                *self = PullState::RunningThenAgain;
                false
            }
            PullState::Idle | PullState::Waiting if slot_free => {
                *self = PullState::Running;
                true
            }
            PullState::Idle | PullState::Waiting => {
                *self = PullState::Waiting;
                false
            }
        }
    }

    /// The running pull ended: idle again, or waiting for a slot if another was asked for.
    pub fn finish(&mut self) {
        *self = match *self {
            PullState::Running | PullState::Idle => PullState::Idle,
            PullState::RunningThenAgain | PullState::Waiting => PullState::Waiting,
        };
    }

    /// Whether a pull is due and not running.
    pub fn is_waiting(self) -> bool {
        self == PullState::Waiting
    }
}

/// What a running pull does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PullKind {
    /// Fetching the ops this node lacks.
    #[serde(rename = "catch-up")]
    CatchUp,
    /// Importing the peer's state snapshot.
    #[serde(rename = "snapshot")]
    Snapshot,
}

impl PullKind {
    /// The name `/v1/status` gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            PullKind::CatchUp => "catch-up",
            PullKind::Snapshot => "snapshot",
        }
    }
}

/// How far a running pull is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullProgress {
    /// Catch-up or snapshot.
    pub kind: PullKind,
    /// Items (ops, owned rows or snapshot rows) done.
    pub done: u64,
    /// Items expected (an estimate for a catch-up), never below `done`.
    pub total: u64,
}

/// One connected peer.
#[derive(Debug)]
struct Peer {
    /// Its client UUID: the device its verified binding names, once one arrived. A peer id
    /// names one run of a device, so two connected peers may share a client.
    client: Option<Uuid>,
    /// The remote address of its connection.
    address: Multiaddr,
    /// How it was found.
    discovery: Discovery,
    /// Where its pull stands.
    pull: PullState,
    /// The running pull's progress, once it has done a page.
    progress: Option<PullProgress>,
    /// The schema it announced last.
    schema: Option<SchemaVersion>,
    /// Its announced contiguous seqs: its last whole announcement, or, while its vector is
    /// too large for one, every part heard since it connected (per author the highest).
    announced: Option<BTreeMap<Uuid, u64>>,
    /// Set when its device may not sync with this node (muted or blocked).
    refused: Option<Refusal>,
    /// Whether it answered this node's `Hello` with `Welcome`: until then its gossip is
    /// left to catch-up (a node not yet known to be a member must apply nothing a member
    /// did not mean it to have).
    welcomed: bool,
}

/// The most refused devices remembered (the oldest is forgotten first).
pub const REFUSED_CAP: usize = 256;

/// A device whose peers this node refused (not a member, or removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedDevice {
    /// Its client UUID.
    pub client: Uuid,
    /// The peer id of its last refused run.
    pub peer_id: PeerId,
    /// Why.
    pub reason: Refusal,
    /// When it was last refused (ms since the UNIX epoch).
    pub at_ms: i64,
}

/// What the rest of the node sees of a connected peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    /// Peer id.
    pub peer_id: PeerId,
    /// Its client UUID, once its device is known.
    pub client_uuid: Option<Uuid>,
    /// Address of the connection.
    pub address: Multiaddr,
    /// How it was found.
    pub discovery: Discovery,
    /// The running pull's progress, if any.
    pub progress: Option<PullProgress>,
    /// The schema it announced last.
    pub schema: Option<SchemaVersion>,
    /// Set when its device may not sync with this node.
    pub refused: Option<Refusal>,
}

/// The table of connected peers; clones share it. The lock is held only inside these
/// methods, never across an await.
#[derive(Debug, Clone, Default)]
pub struct PeerTable {
    peers: Arc<Mutex<BTreeMap<PeerId, Peer>>>,
    /// Devices refused, by client (at most [`REFUSED_CAP`]).
    refused: Arc<Mutex<BTreeMap<Uuid, RefusedDevice>>>,
}

impl PeerTable {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<PeerId, Peer>> {
        // The map stays consistent whatever panicked while holding the lock: every method
        // makes its change in one step.
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks `peer` (a run of `client`) refused, or accepted again with `None`. Returns
    /// whether that changed.
    pub(crate) fn set_refused(&self, peer: &PeerId, client: Uuid, reason: Option<Refusal>) -> bool {
        let changed = match self.lock().get_mut(peer) {
            Some(p) => std::mem::replace(&mut p.refused, reason) != reason,
            None => false,
        };
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        match reason {
            Some(reason) => {
                refused.insert(
                    client,
                    RefusedDevice {
                        client,
                        peer_id: *peer,
                        reason,
                        at_ms: chrono::Utc::now().timestamp_millis(),
                    },
                );
                while refused.len() > REFUSED_CAP {
                    let oldest = refused.values().min_by_key(|d| d.at_ms).map(|d| d.client);
                    if let Some(c) = oldest {
                        refused.remove(&c);
                    }
                }
            }
            None => {
                refused.remove(&client);
            }
        }
        changed
    }

    /// `peer` answered this node's `Hello` with `Welcome`.
    pub(crate) fn set_welcomed(&self, peer: &PeerId) {
        if let Some(p) = self.lock().get_mut(peer) {
            p.welcomed = true;
        }
    }

    /// Whether `peer` welcomed this node (see [`PeerTable::set_welcomed`]).
    pub(crate) fn welcomed(&self, peer: &PeerId) -> bool {
        self.lock().get(peer).is_some_and(|p| p.welcomed)
    }

    /// Whether `peer` is refused, and why.
    pub(crate) fn refused(&self, peer: &PeerId) -> Option<Refusal> {
        self.lock().get(peer).and_then(|p| p.refused)
    }

    /// The devices refused.
    pub fn refused_devices(&self) -> Vec<RefusedDevice> {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The connected peers whose device is known, with it.
    pub(crate) fn clients(&self) -> Vec<(PeerId, Uuid)> {
        self.lock()
            .iter()
            .filter_map(|(id, p)| p.client.map(|c| (*id, c)))
            .collect()
    }

    /// A connection to `peer` is up: adds it, or updates the address and discovery of a
    /// peer already here (its pull state stays). Returns the number of peers.
    pub(crate) fn connect(&self, peer: PeerId, address: Multiaddr, discovery: Discovery) -> usize {
        let mut peers = self.lock();
        match peers.entry(peer) {
            Entry::Occupied(mut e) => {
                let p = e.get_mut();
                p.address = address;
                p.discovery = discovery;
            }
            Entry::Vacant(e) => {
                e.insert(Peer {
                    client: None,
                    address,
                    discovery,
                    pull: PullState::Idle,
                    progress: None,
                    schema: None,
                    announced: None,
                    refused: None,
                    welcomed: false,
                });
            }
        }
        peers.len()
    }

    /// The last connection to `peer` closed: forgets it. Returns the number of peers.
    pub(crate) fn disconnect(&self, peer: &PeerId) -> usize {
        let mut peers = self.lock();
        peers.remove(peer);
        peers.len()
    }

    /// Records the device of `peer` (from a verified binding). Returns whether the peer is
    /// connected and its device was not known before.
    pub(crate) fn set_client(&self, peer: &PeerId, client: Uuid) -> bool {
        match self.lock().get_mut(peer) {
            Some(p) => p.client.replace(client).is_none(),
            None => false,
        }
    }

    /// Records the schema `peer` announced.
    pub(crate) fn set_schema(&self, peer: &PeerId, schema: SchemaVersion) {
        if let Some(p) = self.lock().get_mut(peer) {
            p.schema = Some(schema);
        }
    }

    /// Records the contiguous seqs `peer` announced (for [`PeerTable::settled`]): a whole
    /// vector replaces what it announced before; a `part` of a vector too large for one
    /// announcement ([`super::announce`]) is merged into the parts heard before, so that
    /// a peer of more authors than one announcement carries still settles once every part
    /// came round.
    pub(crate) fn set_announced(&self, peer: &PeerId, contiguous: BTreeMap<Uuid, u64>, part: bool) {
        if let Some(p) = self.lock().get_mut(peer) {
            match (&mut p.announced, part) {
                (Some(heard), true) => {
                    for (a, s) in contiguous {
                        let e = heard.entry(a).or_default();
                        *e = (*e).max(s);
                    }
                }
                (slot, _) => *slot = Some(contiguous),
            }
        }
    }

    /// The peers whose device is known, that pull nothing and whose last announcement
    /// holds exactly the ops `mine` holds: sync with them has settled, so a digest that
    /// still differs is a divergence. With each, its device.
    pub(crate) fn settled(&self, mine: &BTreeMap<Uuid, u64>) -> Vec<(PeerId, Uuid)> {
        // An author at seq 0 holds nothing: it counts on neither side.
        let held = |m: &BTreeMap<Uuid, u64>| -> Vec<(Uuid, u64)> {
            m.iter()
                .filter(|(_, s)| **s > 0)
                .map(|(a, s)| (*a, *s))
                .collect()
        };
        let mine = held(mine);
        self.lock()
            .iter()
            .filter(|(_, p)| {
                p.pull == PullState::Idle && p.announced.as_ref().map(held) == Some(mine.clone())
            })
            .filter_map(|(id, p)| Some((*id, p.client?)))
            .collect()
    }

    /// The client UUID of `peer`, if it is connected and its device is known.
    pub(crate) fn client(&self, peer: &PeerId) -> Option<Uuid> {
        self.lock().get(peer).and_then(|p| p.client)
    }

    /// Asks for a pull from `peer` (see [`PullState::request`]). Returns whether the caller
    /// must start the pull now: false when it is not connected, or the pull is remembered
    /// for later.
    pub(crate) fn request_pull(&self, peer: &PeerId, slot_free: bool) -> bool {
        let mut peers = self.lock();
        peers
            .get_mut(peer)
            .is_some_and(|p| p.pull.request(slot_free))
    }

    /// The pull from `peer` ended (see [`PullState::finish`]).
    pub(crate) fn finish_pull(&self, peer: &PeerId) {
        if let Some(p) = self.lock().get_mut(peer) {
            p.pull.finish();
        }
    }

    /// The peers whose pull waits for a slot.
    pub(crate) fn waiting(&self) -> Vec<PeerId> {
        self.lock()
            .iter()
            .filter(|(_, p)| p.pull.is_waiting())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Records how far the pull from `peer` is (nothing if the peer is gone).
    pub(crate) fn set_progress(&self, peer: &PeerId, progress: PullProgress) {
        if let Some(p) = self.lock().get_mut(peer) {
            p.progress = Some(progress);
        }
    }

    /// The pull from `peer` has stopped: it has no progress to show.
    pub(crate) fn clear_progress(&self, peer: &PeerId) {
        if let Some(p) = self.lock().get_mut(peer) {
            p.progress = None;
        }
    }

    /// Where the pull from `peer` stands (`None` if it is not connected).
    pub fn pull_state(&self, peer: &PeerId) -> Option<PullState> {
        self.lock().get(peer).map(|p| p.pull)
    }

    /// A copy of every connected peer, in peer id order.
    pub fn snapshot(&self) -> Vec<PeerView> {
        self.lock()
            .iter()
            .map(|(id, p)| PeerView {
                peer_id: *id,
                client_uuid: p.client,
                address: p.address.clone(),
                discovery: p.discovery,
                progress: p.progress,
                schema: p.schema,
                refused: p.refused,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every state under every event: a request with a slot free, a request with every
    /// slot taken, the end of a pull.
    #[test]
    fn each_transition_of_the_pull_schedule() {
        use PullState::*;
        enum On {
            Request { slot_free: bool },
            Finish,
        }
        let free = On::Request { slot_free: true };
        let full = On::Request { slot_free: false };
        let cases = [
            // Starts when idle and a slot is free; waits when none is.
            (Idle, &free, Running, true),
            (Idle, &full, Waiting, false),
            // Asked again while running: one more pull after this one, never two at once.
            (Running, &free, RunningThenAgain, false),
            (Running, &full, RunningThenAgain, false),
            (RunningThenAgain, &free, RunningThenAgain, false),
            (RunningThenAgain, &full, RunningThenAgain, false),
            // A waiting pull is picked up once a slot is free.
            (Waiting, &free, Running, true),
            (Waiting, &full, Waiting, false),
            // The end of a pull: idle, or waiting for a slot if another was asked for.
            (Running, &On::Finish, Idle, false),
            (RunningThenAgain, &On::Finish, Waiting, false),
            // An end for a pull of an earlier connection changes nothing due.
            (Idle, &On::Finish, Idle, false),
            (Waiting, &On::Finish, Waiting, false),
        ];
        for (from, on, to, starts) in cases {
            let mut s = from;
            let started = match on {
                On::Request { slot_free } => s.request(*slot_free),
                On::Finish => {
                    s.finish();
                    false
                }
            };
            assert_eq!((s, started), (to, starts), "from {from:?}");
        }
    }

    #[test]
    fn the_table_schedules_pulls_and_keeps_progress_with_the_peer() {
        let t = PeerTable::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        assert!(!t.request_pull(&a, true), "not connected");
        assert_eq!(t.connect(a, addr.clone(), Discovery::Mdns), 1);
        assert_eq!(t.connect(b, addr.clone(), Discovery::Inbound), 2);
        assert!(t.request_pull(&a, true));
        assert!(!t.request_pull(&b, false));
        assert_eq!(t.waiting(), vec![b]);

        // A second connection event updates the address and keeps the schedule.
        let other: Multiaddr = "/ip4/127.0.0.1/tcp/2".parse().unwrap();
        assert_eq!(t.connect(a, other.clone(), Discovery::Configured), 2);
        assert_eq!(t.pull_state(&a), Some(PullState::Running));

        let progress = PullProgress {
            kind: PullKind::CatchUp,
            done: 1,
            total: 2,
        };
        t.set_progress(&a, progress);
        let view = t.snapshot().into_iter().find(|p| p.peer_id == a).unwrap();
        assert_eq!(
            (view.address, view.discovery, view.progress),
            (other, Discovery::Configured, Some(progress))
        );
        t.clear_progress(&a);
        t.finish_pull(&a);
        assert_eq!(t.pull_state(&a), Some(PullState::Idle));
        // The slot a's pull had is b's now.
        assert_eq!(t.waiting(), vec![b]);
        assert!(t.request_pull(&b, true));
        assert!(t.waiting().is_empty());
        assert!(t.snapshot().iter().all(|p| p.progress.is_none()));

        // A peer's device is unknown until its binding arrives; a peer not connected gets
        // none, and a disconnected peer's is forgotten.
        let device = Uuid::from_u128(7);
        assert_eq!(t.client(&a), None);
        assert!(t.set_client(&a, device), "newly known");
        assert!(!t.set_client(&a, device), "known already");
        assert_eq!(t.client(&a), Some(device));
        let view = t.snapshot().into_iter().find(|p| p.peer_id == a).unwrap();
        assert_eq!(view.client_uuid, Some(device));
        assert!(!t.set_client(&PeerId::random(), device), "not connected");

        assert_eq!(t.disconnect(&a), 1);
        assert_eq!(t.client(&a), None);
        t.set_progress(&a, progress);
        assert_eq!(t.pull_state(&a), None);
        assert_eq!(t.snapshot().len(), 1);
    }

    #[test]
    fn a_peer_of_more_authors_than_one_announcement_settles_once_every_part_came() {
        use super::super::announce::{Announcer, VERSIONS_SEND_CAP};
        let t = PeerTable::default();
        let peer = PeerId::random();
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        t.connect(peer, addr, Discovery::Configured);
        t.set_client(&peer, Uuid::from_u128(1));
        // Both hold the same 3,000 authors: more than one announcement carries.
        let mine: BTreeMap<Uuid, u64> = (0..3_000u128).map(|i| (Uuid::from_u128(i), 2)).collect();
        let mut announcer = Announcer::default();
        let mut parts = 0;
        while t.settled(&mine).is_empty() {
            let (part, authors) = announcer.next(&mine, VERSIONS_SEND_CAP);
            assert_eq!(authors, Some(3_000), "a part");
            t.set_announced(&peer, part, true);
            parts += 1;
            assert!(parts <= 6, "never settled after {parts} parts");
        }
        assert!(
            parts >= 3,
            "settled before every author was heard ({parts} parts)"
        );
        // A whole announcement replaces the parts: one author behind is not settled.
        let mut behind = mine.clone();
        behind.insert(Uuid::from_u128(5), 1);
        t.set_announced(&peer, behind, false);
        assert!(t.settled(&mine).is_empty());
    }
}
