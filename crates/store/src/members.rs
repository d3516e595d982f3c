//! Membership: the library's devices as a replicated set of signed events.
//!
//! The library secret lets a node open connections; membership says which devices the
//! others sync with. It is kept as events in the system resource [`DEVICES_LOG`], one row
//! per event, created once and never changed, so they travel like every other row (gossip,
//! catch-up, snapshots, relays). Each event is signed by the device key of the member that
//! made it ([`SignedEvent`]); its row's UUID is a hash of it, so a row is its event.
//!
//! - [`Event::Admit`]: a member admits a device (its public key and name), with the
//!   invitation it claimed, if any.
//! - [`Event::Invite`]: a member creates an invitation: an id, the public key of a one-time
//!   key, an expiry and, for a device named in advance, its name.
//! - [`Event::Remove`]: a member removes a device; `forget_data` deletes its owned rows.
//!
//! [`fold`] turns a set of events into the [`Membership`], the same whatever order they
//! arrived in: events are taken in (timestamp, row UUID) order. The *root* (the founder,
//! recorded locally when the library was created, or learnt when this device joined) is a
//! member from the start; a device is a member once a member admits it (an admission by a
//! device that is removed at the admission's time does not count; one that names an
//! invitation needs it made by a member, unexpired and not used before); it is removed by
//! the first removal signed by a device admitted before that removal's time. A remover's own
//! removal does not undo its removals, so two devices that remove each other concurrently
//! are both removed, on every node.
//!
//! Without a root (a data dir from before membership existed, or a node that joined with
//! the secret only), every device counts as admitted: the secret is the membership, as it
//! was, and removals by any device still count.
//!
//! Pure code: no SQL, no I/O.

use std::collections::BTreeMap;

use libp2p_identity::ed25519;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::hash::Hash;
use crate::op::{Method, Op};
use crate::proof::{Signature, device_uuid};
use crate::registry::{Kind, ResourceDef};
use crate::value::ColumnType;
use crate::wire::{from_cbor, to_cbor};

/// The system resource holding the membership's events.
pub const DEVICES_LOG: &str = "devices_log";
/// Its one column: the event, hex of its CBOR.
pub const EVENT_COLUMN: &str = "event";
/// The most bytes of one event's CBOR (a name is at most [`NAME_CAP`] bytes).
pub const EVENT_BYTES_CAP: usize = 1024;
/// The longest device name, in bytes.
pub const NAME_CAP: usize = 64;
/// Domain separation of an event's signature.
const EVENT_CONTEXT: &[u8] = b"murmur/devices-event/v1";
/// Namespace of events' row UUIDs.
const EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x6d75726d_7572_4000_8000_6465766c6f67);

/// The registration of [`DEVICES_LOG`] (every store has it).
pub fn devices_log_def() -> ResourceDef {
    ResourceDef::new(
        DEVICES_LOG,
        Kind::Shared,
        &[(EVENT_COLUMN, ColumnType::Text)],
    )
}

/// What a member did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// Admitted a device.
    Admit {
        /// The device's ed25519 public key.
        device: Hash,
        /// Its name.
        name: String,
        /// The invitation it claimed, if any.
        invite: Option<Uuid>,
    },
    /// Made an invitation for one device.
    Invite {
        /// Its id.
        id: Uuid,
        /// The public key of its one-time key, which a claim must be signed with.
        key: Hash,
        /// Unusable after this time (NTP64).
        expires: u64,
        /// For a device named in advance: its name.
        name: Option<String>,
    },
    /// Removed a device.
    Remove {
        /// The device's public key.
        device: Hash,
        /// Delete its owned rows (and what is derived from them) everywhere.
        forget_data: bool,
    },
}

/// An [`Event`] signed by a member's device key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedEvent {
    /// The signer's device public key.
    pub by: Hash,
    /// When (NTP64, the signer's clock).
    pub ts: u64,
    /// What it did.
    pub event: Event,
    /// The signature of [`SignedEvent::message`].
    pub sig: Signature,
}

/// Why an event or a claim does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
    /// Not an event (bad hex or CBOR, too large).
    #[error("not a devices_log event: {0}")]
    Decode(String),
    /// A key that is not an ed25519 public key.
    #[error("not an ed25519 public key")]
    BadKey,
    /// The signature does not hold.
    #[error("the signature does not hold")]
    BadSignature,
    /// A name that is empty or too long.
    #[error("a device name is 1 to {NAME_CAP} bytes")]
    BadName,
}

fn public_key(h: &Hash) -> Result<ed25519::PublicKey, MemberError> {
    ed25519::PublicKey::try_from_bytes(&h.0).map_err(|_| MemberError::BadKey)
}

/// The client UUID of a device key (`None` when it is not a key).
pub fn client_of(key: &Hash) -> Option<Uuid> {
    public_key(key).ok().map(|k| device_uuid(&k))
}

/// A signature of `message` by `keypair`.
pub fn sign(keypair: &ed25519::Keypair, message: &[u8]) -> Signature {
    let mut out = [0u8; 64];
    // An ed25519 signature is 64 bytes.
    out.copy_from_slice(&keypair.sign(message));
    Signature(out)
}

/// Whether `sig` is `key`'s over `message`.
pub fn verify(key: &Hash, message: &[u8], sig: &Signature) -> Result<(), MemberError> {
    if public_key(key)?.verify(message, &sig.0) {
        Ok(())
    } else {
        Err(MemberError::BadSignature)
    }
}

impl SignedEvent {
    /// `event`, signed by `keypair` at `ts`.
    pub fn sign(keypair: &ed25519::Keypair, ts: u64, event: Event) -> SignedEvent {
        let by = Hash(keypair.public().to_bytes());
        let sig = sign(keypair, &Self::message(&by, ts, &event));
        SignedEvent { by, ts, event, sig }
    }

    /// What the signature covers: a context, then the CBOR of signer, time and event.
    pub fn message(by: &Hash, ts: u64, event: &Event) -> Vec<u8> {
        let mut m = EVENT_CONTEXT.to_vec();
        m.extend_from_slice(&to_cbor(&(by, ts, event)));
        m
    }

    /// Checks the signature (and the names' bounds).
    pub fn verify(&self) -> Result<(), MemberError> {
        let name = match &self.event {
            Event::Admit { name, .. } => Some(name),
            Event::Invite { name, .. } => name.as_ref(),
            Event::Remove { .. } => None,
        };
        if name.is_some_and(|n| n.is_empty() || n.len() > NAME_CAP) {
            return Err(MemberError::BadName);
        }
        verify(
            &self.by,
            &Self::message(&self.by, self.ts, &self.event),
            &self.sig,
        )
    }

    /// The text stored in the row: hex of the CBOR.
    pub fn to_text(&self) -> String {
        hex::encode(to_cbor(self))
    }

    /// Parses [`SignedEvent::to_text`] (bounded), without checking the signature.
    pub fn from_text(text: &str) -> Result<SignedEvent, MemberError> {
        if text.len() > 2 * EVENT_BYTES_CAP {
            return Err(MemberError::Decode(format!("{} characters", text.len())));
        }
        let bytes = hex::decode(text).map_err(|e| MemberError::Decode(e.to_string()))?;
        from_cbor(&bytes, EVENT_BYTES_CAP, "devices_log event")
            .map_err(|e| MemberError::Decode(e.to_string()))
    }

    /// The UUID of the event's row: a UUIDv5 of its CBOR, so a row is its event.
    pub fn row_uuid(&self) -> Uuid {
        Uuid::new_v5(&EVENT_NAMESPACE, &to_cbor(self))
    }

    /// The signer's client UUID.
    pub fn signer(&self) -> Option<Uuid> {
        client_of(&self.by)
    }
}

/// A removal that counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    /// The client that removed the device.
    pub by: Uuid,
    /// When (NTP64).
    pub at: u64,
    /// Whether its owned rows are deleted everywhere.
    pub forget_data: bool,
}

/// A device of the library as the fold sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Its client UUID.
    pub client: Uuid,
    /// Its public key.
    pub key: Hash,
    /// Its name ("" when unknown).
    pub name: String,
    /// Whether it is (or was) admitted.
    pub admitted: bool,
    /// Who admitted it (`None`: the root, or a library without a root).
    pub admitted_by: Option<Uuid>,
    /// When (NTP64; 0 for the root).
    pub admitted_at: u64,
    /// The invitation it claimed.
    pub invite: Option<Uuid>,
    /// Its removal, if one counts.
    pub removed: Option<Removal>,
}

/// An invitation as the fold sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteInfo {
    /// Its id.
    pub id: Uuid,
    /// Its one-time public key.
    pub key: Hash,
    /// When it expires (NTP64).
    pub expires: u64,
    /// The name of the device it was made for, if named in advance.
    pub name: Option<String>,
    /// Who made it.
    pub by: Uuid,
    /// When.
    pub at: u64,
    /// The device that claimed it, once one did.
    pub used_by: Option<Uuid>,
}

/// What a device may do, by the membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// A member (or, without a root, any device not removed).
    Member,
    /// Never admitted.
    NotMember,
    /// Removed.
    Removed(Removal),
}

/// The library's devices and invitations: the fold of the events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    /// The root's key, if this node knows one.
    pub root: Option<Hash>,
    /// Every device an event names, by client UUID.
    pub devices: BTreeMap<Uuid, DeviceInfo>,
    /// Every invitation made by a member, by id.
    pub invites: BTreeMap<Uuid, InviteInfo>,
    /// How many events counted (for status).
    pub events: usize,
}

impl Membership {
    /// Whether this node enforces membership (it knows a root).
    pub fn enforced(&self) -> bool {
        self.root.is_some()
    }

    /// The standing of `client` now.
    pub fn standing(&self, client: &Uuid) -> Standing {
        match self.devices.get(client) {
            Some(DeviceInfo {
                removed: Some(r), ..
            }) => Standing::Removed(*r),
            Some(d) if d.admitted => Standing::Member,
            _ if !self.enforced() => Standing::Member,
            _ => Standing::NotMember,
        }
    }

    /// Whether an op of `client` stamped `time` (NTP64) is accepted, on a resource of
    /// kind `kind`: a member's is; a removed device's is when it is older than the removal
    /// (none of an owned resource once its data is forgotten).
    pub fn accepts(&self, client: &Uuid, time: u64, kind: Kind) -> Standing {
        match self.standing(client) {
            Standing::Removed(r) if r.forget_data && kind == Kind::Owned => Standing::Removed(r),
            Standing::Removed(r) if time > r.at => Standing::Removed(r),
            Standing::Removed(_) => Standing::Member,
            s => s,
        }
    }

    /// Whether `client` is a member (admitted and not removed) at `ts`.
    fn member_at(&self, client: &Uuid, ts: u64) -> bool {
        match self.devices.get(client) {
            Some(d) => d.admitted && d.admitted_at <= ts && d.removed.is_none_or(|r| r.at > ts),
            None => !self.enforced(),
        }
    }

    /// Whether `client` was admitted at or before `ts` (its own removal aside).
    fn admitted_by(&self, client: &Uuid, ts: u64) -> bool {
        match self.devices.get(client) {
            Some(d) => d.admitted && d.admitted_at <= ts,
            None => !self.enforced(),
        }
    }

    /// The devices removed with `forget_data`.
    pub fn forgotten(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.devices
            .values()
            .filter(|d| d.removed.is_some_and(|r| r.forget_data))
            .map(|d| d.client)
    }

    /// The device of that name or client UUID (text).
    pub fn find(&self, name_or_client: &str) -> Option<&DeviceInfo> {
        if let Ok(u) = name_or_client.parse::<Uuid>()
            && let Some(d) = self.devices.get(&u)
        {
            return Some(d);
        }
        self.devices.values().find(|d| d.name == name_or_client)
    }

    /// Why a claim of invitation `id` by `client` at `now` is refused, if it is.
    pub fn check_claim(&self, id: &Uuid, client: &Uuid, now: u64) -> Result<(), ClaimRefusal> {
        let Some(inv) = self.invites.get(id) else {
            return Err(ClaimRefusal::Unknown);
        };
        match inv.used_by {
            Some(c) if c == *client => return Ok(()),
            Some(_) => return Err(ClaimRefusal::Used),
            None => {}
        }
        if now > inv.expires {
            return Err(ClaimRefusal::Expired);
        }
        Ok(())
    }
}

/// Why a member refuses a claim of an invitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ClaimRefusal {
    /// This member does not know the invitation (yet): retry, or ask another member.
    #[error("this member does not know the invitation (yet): retrying")]
    Unknown,
    /// It expired.
    #[error("the invitation has expired: ask a member for a new one (murmur invite)")]
    Expired,
    /// Another device claimed it.
    #[error(
        "the invitation was already used by another device: ask a member for a new one (murmur invite)"
    )]
    Used,
    /// The claim's signatures do not hold.
    #[error("the claim's signatures do not hold")]
    BadClaim,
}

/// Folds `events` into the membership, with `root` as the trust root: the same result
/// whatever the order or repetition of `events`. Events whose signature fails are left out.
pub fn fold(root: Option<Hash>, events: &[SignedEvent]) -> Membership {
    let mut sorted: Vec<(u64, Uuid, &SignedEvent)> = events
        .iter()
        .filter(|e| e.verify().is_ok())
        .map(|e| (e.ts, e.row_uuid(), e))
        .collect();
    sorted.sort_by_key(|a| (a.0, a.1));
    sorted.dedup_by(|a, b| a.1 == b.1);
    let mut m = Membership {
        root,
        ..Membership::default()
    };
    if let Some(key) = root
        && let Some(client) = client_of(&key)
    {
        m.devices.insert(
            client,
            DeviceInfo {
                client,
                key,
                name: String::new(),
                admitted: true,
                admitted_by: None,
                admitted_at: 0,
                invite: None,
                removed: None,
            },
        );
    }
    for (ts, _, e) in sorted {
        let Some(by) = e.signer() else { continue };
        let counted = match &e.event {
            Event::Admit {
                device,
                name,
                invite,
            } => admit(&mut m, by, ts, device, name, *invite),
            Event::Invite {
                id,
                key,
                expires,
                name,
            } => {
                if m.member_at(&by, ts) && !m.invites.contains_key(id) {
                    m.invites.insert(
                        *id,
                        InviteInfo {
                            id: *id,
                            key: *key,
                            expires: *expires,
                            name: name.clone(),
                            by,
                            at: ts,
                            used_by: None,
                        },
                    );
                    true
                } else {
                    false
                }
            }
            Event::Remove {
                device,
                forget_data,
            } => remove(&mut m, by, ts, device, *forget_data),
        };
        if counted {
            m.events += 1;
        }
    }
    m
}

fn admit(
    m: &mut Membership,
    by: Uuid,
    ts: u64,
    device: &Hash,
    name: &str,
    invite: Option<Uuid>,
) -> bool {
    let Some(client) = client_of(device) else {
        return false;
    };
    if !m.member_at(&by, ts) {
        return false;
    }
    // The root's own admission names it.
    if let Some(d) = m.devices.get_mut(&client)
        && d.admitted
    {
        if d.name.is_empty() && by == client {
            d.name = name.to_owned();
            return true;
        }
        return false;
    }
    if let Some(id) = invite {
        match m.invites.get_mut(&id) {
            Some(inv) if inv.used_by.is_none() && ts <= inv.expires => inv.used_by = Some(client),
            _ => return false,
        }
    }
    let entry = m.devices.entry(client).or_insert_with(|| DeviceInfo {
        client,
        key: *device,
        name: String::new(),
        admitted: false,
        admitted_by: None,
        admitted_at: 0,
        invite: None,
        removed: None,
    });
    entry.admitted = true;
    entry.name = name.to_owned();
    entry.admitted_by = (by != client).then_some(by);
    entry.admitted_at = ts;
    entry.invite = invite;
    true
}

fn remove(m: &mut Membership, by: Uuid, ts: u64, device: &Hash, forget_data: bool) -> bool {
    let Some(client) = client_of(device) else {
        return false;
    };
    if !m.admitted_by(&by, ts) {
        return false;
    }
    let entry = m.devices.entry(client).or_insert_with(|| DeviceInfo {
        client,
        key: *device,
        name: String::new(),
        admitted: false,
        admitted_by: None,
        admitted_at: 0,
        invite: None,
        removed: None,
    });
    if entry.removed.is_some() {
        return false;
    }
    entry.removed = Some(Removal {
        by,
        at: ts,
        forget_data,
    });
    true
}

/// A `devices_log` op is the creation of one event's row: a `SharedCreate` whose `event`
/// holds a signed event ([`crate::members`]) and whose UUID is the event's. Its rows are
/// never updated or deleted.
pub fn check_event_op(op: &Op) -> Result<(), String> {
    if op.method != Method::SharedCreate {
        return Err("devices_log rows are only created, never changed".into());
    }
    let Some(crate::value::Value::Text(text)) = op.fields.get(EVENT_COLUMN) else {
        return Err("a devices_log row holds an event".into());
    };
    let event = SignedEvent::from_text(text).map_err(|e| e.to_string())?;
    event
        .verify()
        .map_err(|e| format!("devices_log event: {e}"))?;
    if op.uuid != Some(event.row_uuid()) || op.fields.len() != 1 {
        return Err("a devices_log row's UUID is its event's".into());
    }
    Ok(())
}

/// The events this node holds, its root, and their fold.
#[derive(Debug, Clone, Default)]
pub struct MembersState {
    /// The trust root.
    pub root: Option<Hash>,
    /// Every event held (verified or not: the fold leaves out those that fail).
    pub events: Vec<SignedEvent>,
    /// Their fold.
    pub folded: Membership,
}

impl MembersState {
    /// The state of `events` under `root`.
    pub fn new(root: Option<Hash>, events: Vec<SignedEvent>) -> MembersState {
        let folded = fold(root, &events);
        MembersState {
            root,
            events,
            folded,
        }
    }

    /// The membership with `extra` events too (a batch being applied).
    pub fn with(&self, extra: &[SignedEvent]) -> std::borrow::Cow<'_, Membership> {
        if extra.is_empty() {
            return std::borrow::Cow::Borrowed(&self.folded);
        }
        let mut all = self.events.clone();
        all.extend_from_slice(extra);
        std::borrow::Cow::Owned(fold(self.root, &all))
    }
}

impl Membership {
    /// Whether it accepts every device's ops (no root, no removal): nothing to check.
    pub fn accepts_all(&self) -> bool {
        !self.enforced() && self.devices.values().all(|d| d.removed.is_none())
    }
}

/// A new device's claim of an invitation: its key and name, signed by its device key and by
/// the invitation's one-time key (so a member can check that the claimer holds both).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The invitation.
    pub invite: Uuid,
    /// The claiming device's public key.
    pub device: Hash,
    /// Its name.
    pub name: String,
    /// The device key's signature of [`Claim::message`].
    pub device_sig: Signature,
    /// The invitation key's signature of it.
    pub invite_sig: Signature,
}

const CLAIM_CONTEXT: &[u8] = b"murmur/claim/v1";

impl Claim {
    /// A claim of `invite` by `device`, signed with the invitation key `invite_key`.
    pub fn new(
        invite: Uuid,
        device: &ed25519::Keypair,
        name: &str,
        invite_key: &ed25519::Keypair,
    ) -> Claim {
        let key = Hash(device.public().to_bytes());
        let msg = Self::message(&invite, &key, name);
        Claim {
            invite,
            device: key,
            name: name.to_owned(),
            device_sig: sign(device, &msg),
            invite_sig: sign(invite_key, &msg),
        }
    }

    /// What both signatures cover.
    pub fn message(invite: &Uuid, device: &Hash, name: &str) -> Vec<u8> {
        let mut m = CLAIM_CONTEXT.to_vec();
        m.extend_from_slice(&to_cbor(&(invite, device, name)));
        m
    }

    /// Checks both signatures, the invitation's against `invite_key`.
    pub fn verify(&self, invite_key: &Hash) -> Result<(), MemberError> {
        if self.name.is_empty() || self.name.len() > NAME_CAP {
            return Err(MemberError::BadName);
        }
        let msg = Self::message(&self.invite, &self.device, &self.name);
        verify(&self.device, &msg, &self.device_sig)?;
        verify(invite_key, &msg, &self.invite_sig)
    }
}

/// The one-time key of a device named in advance (`murmur init --devices`), derived from
/// the library secret and the name: any holder of the secret can claim the name, once.
pub fn named_invite_key(secret: &[u8; 32], name: &str) -> (Uuid, ed25519::Keypair) {
    let mut seed =
        *blake3::keyed_hash(secret, format!("murmur named invite {name}").as_bytes()).as_bytes();
    let key = ed25519::SecretKey::try_from_bytes(&mut seed)
        .map(ed25519::Keypair::from)
        .unwrap_or_else(|_| ed25519::Keypair::generate());
    let id = Uuid::new_v5(&EVENT_NAMESPACE, &key.public().to_bytes());
    (id, key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(k: &ed25519::Keypair) -> Hash {
        Hash(k.public().to_bytes())
    }

    fn client(k: &ed25519::Keypair) -> Uuid {
        device_uuid(&k.public())
    }

    fn admit_ev(by: &ed25519::Keypair, ts: u64, who: &ed25519::Keypair, name: &str) -> SignedEvent {
        SignedEvent::sign(
            by,
            ts,
            Event::Admit {
                device: key(who),
                name: name.into(),
                invite: None,
            },
        )
    }

    fn remove_ev(by: &ed25519::Keypair, ts: u64, who: &ed25519::Keypair) -> SignedEvent {
        SignedEvent::sign(
            by,
            ts,
            Event::Remove {
                device: key(who),
                forget_data: false,
            },
        )
    }

    #[test]
    fn admitted_by_a_member_and_removed() {
        let (root, a, b, stranger) = (
            ed25519::Keypair::generate(),
            ed25519::Keypair::generate(),
            ed25519::Keypair::generate(),
            ed25519::Keypair::generate(),
        );
        let events = vec![
            admit_ev(&root, 10, &root, "root"),
            admit_ev(&root, 20, &a, "a"),
            admit_ev(&a, 30, &b, "b"),
            // Not a member: does not count.
            admit_ev(&stranger, 40, &stranger, "me"),
            remove_ev(&root, 50, &b),
            // Admitted by a removed device after its removal: does not count.
            admit_ev(&b, 60, &stranger, "s"),
        ];
        let m = fold(Some(key(&root)), &events);
        assert_eq!(m.standing(&client(&root)), Standing::Member);
        assert_eq!(m.devices[&client(&root)].name, "root");
        assert_eq!(m.standing(&client(&a)), Standing::Member);
        assert_eq!(m.devices[&client(&b)].admitted_by, Some(client(&a)));
        assert!(matches!(m.standing(&client(&b)), Standing::Removed(r) if r.at == 50));
        assert_eq!(m.standing(&client(&stranger)), Standing::NotMember);
        // Ops of b before its removal are accepted, later ones not.
        assert_eq!(m.accepts(&client(&b), 49, Kind::Shared), Standing::Member);
        assert!(matches!(
            m.accepts(&client(&b), 51, Kind::Shared),
            Standing::Removed(_)
        ));
        // Without a root, the secret is the membership; removals still count.
        let open = fold(None, &events);
        assert_eq!(open.standing(&client(&stranger)), Standing::Member);
        assert!(matches!(open.standing(&client(&b)), Standing::Removed(_)));
    }

    #[test]
    fn two_devices_removing_each_other_are_both_removed() {
        let (root, a, b) = (
            ed25519::Keypair::generate(),
            ed25519::Keypair::generate(),
            ed25519::Keypair::generate(),
        );
        let events = vec![
            admit_ev(&root, 1, &a, "a"),
            admit_ev(&root, 2, &b, "b"),
            remove_ev(&a, 10, &b),
            remove_ev(&b, 11, &a),
        ];
        let m = fold(Some(key(&root)), &events);
        assert!(matches!(m.standing(&client(&a)), Standing::Removed(_)));
        assert!(matches!(m.standing(&client(&b)), Standing::Removed(_)));
        assert_eq!(m.standing(&client(&root)), Standing::Member);
    }

    #[test]
    fn an_invitation_is_used_once_and_expires() {
        let (root, inv, a, b) = (
            ed25519::Keypair::generate(),
            ed25519::Keypair::generate(),
            ed25519::Keypair::generate(),
            ed25519::Keypair::generate(),
        );
        let id = Uuid::from_u128(7);
        let invite = SignedEvent::sign(
            &root,
            5,
            Event::Invite {
                id,
                key: key(&inv),
                expires: 100,
                name: None,
            },
        );
        let claim = |who: &ed25519::Keypair, ts| {
            SignedEvent::sign(
                &root,
                ts,
                Event::Admit {
                    device: key(who),
                    name: "x".into(),
                    invite: Some(id),
                },
            )
        };
        let m = fold(
            Some(key(&root)),
            &[invite.clone(), claim(&a, 10), claim(&b, 11)],
        );
        assert_eq!(m.standing(&client(&a)), Standing::Member);
        assert_eq!(m.standing(&client(&b)), Standing::NotMember);
        assert_eq!(m.invites[&id].used_by, Some(client(&a)));
        assert_eq!(m.check_claim(&id, &client(&b), 12), Err(ClaimRefusal::Used));
        assert_eq!(m.check_claim(&id, &client(&a), 12), Ok(()));
        // Expired: the admission does not count, and a claim is refused.
        let late = fold(Some(key(&root)), &[invite.clone(), claim(&a, 101)]);
        assert_eq!(late.standing(&client(&a)), Standing::NotMember);
        assert_eq!(
            late.check_claim(&id, &client(&a), 101),
            Err(ClaimRefusal::Expired)
        );
        assert_eq!(
            late.check_claim(&Uuid::from_u128(8), &client(&a), 1),
            Err(ClaimRefusal::Unknown)
        );
        // The claim's signatures.
        let c = Claim::new(id, &a, "a", &inv);
        assert_eq!(c.verify(&key(&inv)), Ok(()));
        assert!(c.verify(&key(&a)).is_err());
    }

    #[test]
    fn a_tampered_event_does_not_count_and_text_round_trips() {
        let (root, a) = (ed25519::Keypair::generate(), ed25519::Keypair::generate());
        let mut e = admit_ev(&root, 1, &a, "a");
        assert_eq!(SignedEvent::from_text(&e.to_text()), Ok(e.clone()));
        e.ts = 2;
        assert!(e.verify().is_err());
        let m = fold(Some(key(&root)), &[e]);
        assert_eq!(m.standing(&client(&a)), Standing::NotMember);
        assert!(SignedEvent::from_text("zz").is_err());
        assert!(SignedEvent::from_text(&"00".repeat(EVENT_BYTES_CAP + 1)).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any order and repetition of the same events folds to the same membership.
        #[test]
        fn the_fold_ignores_order_and_repetition(
            script in proptest::collection::vec((0u8..3, 0usize..4, 0usize..4, 0u64..40), 1..24),
            perm in proptest::collection::vec(any::<proptest::sample::Index>(), 0..48),
        ) {
            let keys: Vec<ed25519::Keypair> = (0..4u8)
                .map(|i| {
                    let mut seed = [i + 1; 32];
                    ed25519::Keypair::from(ed25519::SecretKey::try_from_bytes(&mut seed).unwrap())
                })
                .collect();
            let events: Vec<SignedEvent> = script
                .iter()
                .map(|(kind, by, who, ts)| match kind {
                    0 | 1 => admit_ev(&keys[*by], *ts, &keys[*who], "d"),
                    _ => remove_ev(&keys[*by], *ts, &keys[*who]),
                })
                .collect();
            let root = Some(key(&keys[0]));
            let expected = fold(root, &events);
            let mut shuffled = events.clone();
            for (i, ix) in perm.iter().enumerate() {
                let n = shuffled.len();
                shuffled.swap(i % n, ix.index(n));
            }
            shuffled.extend(events.iter().take(3).cloned());
            prop_assert_eq!(fold(root, &shuffled), expected);
        }
    }
}
