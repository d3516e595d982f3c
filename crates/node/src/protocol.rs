//! murmur's messages between nodes: what travels on gossip and over request-response, and
//! the network handle and events typed with them.
//! CBOR on the wire (ciborium); every decode is bounded by the transport's size limits.

use std::collections::BTreeMap;

use murmur_p2p::{Event, Handle};
use murmur_store::digest::{Fingerprint, Ranges};
use murmur_store::members::{Claim, ClaimRefusal};
use murmur_store::proof::Hash;
use murmur_store::proof::Proof;
use murmur_store::{
    AuthorRange, Op, OpsCursor, OpsPage, SchemaVersion, SnapshotPosition, SnapshotRow,
    VersionVector,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::device::DeviceBinding;

/// The network handle's type for murmur's messages.
pub type Net = Handle<Request, Response>;
/// The network's events.
pub type NetEvent = Event<Request, Response>;

/// The most ops one gossip message carries; a larger write goes out in several messages.
pub const GOSSIP_OPS_CAP: usize = 512;
/// Largest gossip payload the node publishes (below the swarm's limit).
pub const GOSSIP_BYTES_CAP: usize = 256 * 1024;
/// Page size of a catch-up (ops plus owned rows) and of a snapshot, in items. Pages are
/// also cut at [`murmur_store::MAX_PAGE_BYTES`] by the store.
pub const PAGE_SIZE: usize = 5_000;

// A page of at most MAX_PAGE_BYTES, or a single item over it (a row of up to MAX_ROW_BYTES,
// or a shared row that concurrent writes to its columns made a few times larger), plus the
// rest of a response, fits in the response frame, so no page is ever refused for its size.
const _: () = assert!(
    murmur_store::MAX_PAGE_BYTES + 2 * murmur_store::MAX_ROW_BYTES
        <= murmur_p2p::config::DEFAULT_MAX_RESPONSE_BYTES
);
/// The most `extra` seqs per author a request carries.
pub const VV_EXTRA_CAP: usize = 256;
/// The most bytes of version vector one `OpsSince` request carries (by
/// [`VersionVector::wire_size`]); a larger vector is sent in author ranges, one per pull
/// round, well under the request cap.
pub const HAVE_BYTES_CAP: usize = murmur_p2p::config::DEFAULT_MAX_REQUEST_BYTES / 2;
/// The most authors of `Response::Ops::server`.
pub const SERVER_AUTHORS_CAP: usize = 1024;

/// A gossip message on the library's topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Gossip {
    /// New ops of the sender (an `OwnedBatchCreate` travels as its header only), with the
    /// proofs of their author (one per run).
    Ops {
        /// The ops.
        ops: Vec<Op>,
        /// Their proofs.
        proofs: Vec<Proof>,
    },
    /// The sender's version vector (per author, contiguous seq), sent periodically and when
    /// a peer subscribes: a heartbeat for the client pool, the input of pruning, a way to
    /// notice lost gossip, and how peers learn which device the sender is. A vector of
    /// more authors than one message carries travels in parts (see `crate::sync::announce`):
    /// the authors that moved since the last announcement, then a window that goes round
    /// the rest, so that every author is announced every few periods.
    Versions {
        /// The sender's device, bound to the peer id that signed the message.
        device: DeviceBinding,
        /// Per author, the highest contiguous seq the sender holds (all authors, or a part).
        contiguous: BTreeMap<Uuid, u64>,
        /// Per author, the highest seq pruned from the sender's log (of the same authors).
        horizon: BTreeMap<Uuid, u64>,
        /// When `contiguous` is a part: how many authors the whole vector has.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        authors: Option<u64>,
        /// The sender's schema (its registry), so peers can say who runs a newer one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        schema: Option<SchemaVersion>,
        /// When it was sent (ms since the UNIX epoch). Gossip ids hash the content, so
        /// this keeps two announcements of the same vector from being taken as one.
        sent_at_ms: u64,
    },
}

/// A request to a peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Which device the requester is (every pull starts with it): a peer answers other
    /// requests only from a device it knows to be a member.
    Hello {
        /// The requester's device, bound to the peer id the request came from.
        device: DeviceBinding,
    },
    /// A new device claims an invitation ([`murmur_store::members`]).
    Join {
        /// The claimer's device, bound to the peer id the request came from.
        device: DeviceBinding,
        /// The claim, signed by the device key and the invitation's key.
        claim: Claim,
    },
    /// A page of the ops the requester lacks.
    OpsSince {
        /// The requester's version vector (its `extra` sets bounded by [`VV_EXTRA_CAP`]).
        have: VersionVector,
        /// Where the previous page ended.
        cursor: OpsCursor,
        /// Page size wanted (the server caps it).
        limit: u32,
        /// Only the ops of these authors (`have` holds no other); `None`: every author.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        range: Option<AuthorRange>,
    },
    /// A page of the proofs of what the server's snapshot covers (one per author), all of
    /// which the requester fetches before the snapshot's first page of rows.
    SnapshotProofs {
        /// The last author of the previous page (None: start).
        after: Option<Uuid>,
    },
    /// A page of the server's state snapshot.
    Snapshot {
        /// Where the previous page ended (None: start, and send the version vector).
        position: Option<SnapshotPosition>,
        /// Page size wanted (the server caps it).
        limit: u32,
        /// The first page of a snapshot import that a restarted requester continues at
        /// `position`: answer it as a first page (with `total_rows` and `schema`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        resume: bool,
    },
    /// The fingerprint of each resource (the top of the digest's ranges).
    Fingerprints,
    /// What a key range of a resource is made of: sub-ranges or rows, with fingerprints
    /// ([`murmur_store::Store::range`]).
    Range {
        /// The resource.
        resource: String,
        /// The range: a prefix of the rows' UUIDs.
        prefix: String,
    },
    /// Rows by UUID, as a snapshot sends them, to repair a divergence (at most
    /// [`murmur_store::MAX_ROWS_ASKED`]).
    Rows {
        /// The resource.
        resource: String,
        /// The rows.
        uuids: Vec<Uuid>,
    },
}

/// A response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// A page of ops, with the server's version vector so the requester can tell progress.
    Ops {
        /// The page.
        page: OpsPage,
        /// On a first page: the server's contiguous seqs of the authors the requester lacks
        /// ops of (in the range asked for; at most [`SERVER_AUTHORS_CAP`] of them).
        server: BTreeMap<Uuid, u64>,
    },
    /// A page of a snapshot's proofs.
    SnapshotProofs {
        /// The proofs, in author order (only these move the receiver's version vector).
        proofs: Vec<Proof>,
        /// The last author of this page when more follow.
        next: Option<Uuid>,
    },
    /// The requester is behind the server's horizon: it must take a snapshot first.
    SnapshotRequired,
    /// A page of the snapshot.
    Snapshot {
        /// Rows.
        rows: Vec<SnapshotRow>,
        /// Where to continue (None: done).
        next: Option<SnapshotPosition>,
        /// On the first page: rows in the snapshot, for progress.
        total_rows: Option<u64>,
        /// On the first page: the server's schema. Positions name resources in its
        /// registry's order, so a resumed import continues only from the same schema.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        schema: Option<SchemaVersion>,
    },
    /// Each resource's fingerprint, in the server's registry order.
    Fingerprints(Vec<(String, Fingerprint)>),
    /// A key range's sub-ranges or rows.
    Range(Ranges),
    /// Rows asked for by UUID (those the server holds), and how many of the UUIDs asked
    /// for it looked at (the rest did not fit the page: ask again).
    Rows {
        /// Rows.
        rows: Vec<SnapshotRow>,
        /// UUIDs looked at.
        looked: u32,
    },
    /// The requester's device is known and a member.
    Welcome,
    /// The claim of an invitation was accepted (or the device was a member already).
    Joined {
        /// The library's trust root, as the member knows it.
        root: Option<Hash>,
    },
    /// The requester's device may not sync with this node.
    Refused {
        /// Why.
        reason: Refusal,
    },
    /// The request was refused.
    Error(String),
}

/// Why a node refuses a peer's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// Its device was never admitted.
    #[error(
        "this device is not a member of the library: on a member, run `murmur invite`, then start \
         this device with `--join <invitation>`"
    )]
    NotMember,
    /// Its device was removed.
    #[error("this device was removed from the library")]
    Removed,
    /// The requester has not said which device it is (`Hello`), or its binding failed.
    #[error("unknown device: send Hello first")]
    UnknownDevice,
    /// Its claim of an invitation was refused.
    #[error("{0}")]
    Claim(ClaimRefusal),
}

impl Refusal {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::NotMember => "not_member",
            Refusal::Removed => "removed",
            Refusal::UnknownDevice => "unknown_device",
            Refusal::Claim(ClaimRefusal::Unknown) => "unknown_invite",
            Refusal::Claim(ClaimRefusal::Expired) => "expired_invite",
            Refusal::Claim(ClaimRefusal::Used) => "used_invite",
            Refusal::Claim(ClaimRefusal::BadClaim) => "bad_claim",
        }
    }
}
