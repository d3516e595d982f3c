//! Proof of authorship: each author's log is a hash chain whose heads the author signs with
//! its device key, so any relay can pass a run of an author's ops on with one signature.
//!
//! - An op's hash ([`op_hash`]) covers every field of the op, author and seq included.
//! - The chain: `chain(0)` is [`Hash::ZERO`]; `chain(n) = blake3(chain(n-1) ‖ op_hash(op n))`.
//! - A *head* is a seq whose chain hash the author signed, with the message
//!   [`head_message`] (a context, the author, the seq and the chain hash). The author
//!   signs the last op of every write, and at least every [`HEAD_EVERY`] ops inside a
//!   large one.
//! - A [`Proof`] covers a run of consecutive ops of one author, `first..first+n`: the chain
//!   hash before the run (`prev`), the op hashes between the run's end and the next head
//!   (`tail`), and the head's signature. The verifier recomputes the chain from `prev`
//!   through the run and the tail and checks the signature: a forged or altered op, or ops
//!   attributed to another author, would need a blake3 preimage or an ed25519 forgery. A
//!   proof with an empty run proves that the author's log reached `first - 1` with chain
//!   hash `prev` (what a snapshot's version vector is checked with).
//! - An owned batch's rows travel apart from its header, in pages, so the header commits to
//!   them: [`Op::groups`] cuts the rows, in UUID order, into groups ([`row_groups`]), each a
//!   row count and the [`group_hash`] of its rows' [`row_leaf`]s, and [`op_hash`] covers the
//!   groups. A page of rows holds whole groups, and [`check_rows`] checks them against the
//!   (proven) header: no relay can add, drop, alter or mix in rows.
//! - Authors are *incarnations*: every time a store opens it writes under a new author,
//!   `author_uuid(device key, nonce)` with a fresh random nonce, so a data dir restored
//!   from a backup, or copied to a second machine, never reuses a seq that another copy
//!   wrote. The device (the owner of owned rows, the client of the pool) is the key's
//!   [`device_uuid`], the same on every incarnation.
//!
//! Pure code: no SQL, no I/O.

use std::fmt;

use libp2p_identity::ed25519;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use crate::hash::Hash;
use crate::op::{Method, Op, OwnedRow, RowGroup};

/// The author signs a head at least this often inside one large write.
pub const HEAD_EVERY: u64 = 256;

/// Namespace of device UUIDs (the client UUIDs of the pool), a UUIDv5 of the peer id.
const DEVICE_NAMESPACE: Uuid = Uuid::from_u128(0x6d75726d_7572_4000_8000_636c69656e74);
/// Namespace of author UUIDs, a UUIDv5 of the device key and the incarnation's nonce.
const AUTHOR_NAMESPACE: Uuid = Uuid::from_u128(0x6d75726d_7572_4000_8000_617574686f72);
/// Domain separation of the signed message.
const HEAD_CONTEXT: &[u8] = b"murmur/head/v1";

/// An ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sig:{}", hex::encode(&self.0[..8]))
    }
}

impl Serialize for Signature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_bytes::Bytes::new(&self.0).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Signature, D::Error> {
        let b = serde_bytes::ByteArray::<64>::deserialize(d)?;
        Ok(Signature(b.into_array()))
    }
}

/// Who an author is: a device's public key and the nonce of one incarnation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AuthorKey {
    /// The device's ed25519 public key (`identity.key`; not the node's transport key).
    pub public: Hash,
    /// The incarnation.
    pub nonce: u128,
}

impl AuthorKey {
    /// The author UUID this key stands for.
    pub fn author(&self) -> Uuid {
        let mut name = [0u8; 48];
        name[..32].copy_from_slice(&self.public.0);
        name[32..].copy_from_slice(&self.nonce.to_be_bytes());
        Uuid::new_v5(&AUTHOR_NAMESPACE, &name)
    }

    /// The device UUID of the key.
    pub fn device(&self) -> Result<Uuid, ProofError> {
        Ok(device_uuid(&self.public_key()?))
    }

    fn public_key(&self) -> Result<ed25519::PublicKey, ProofError> {
        ed25519::PublicKey::try_from_bytes(&self.public.0).map_err(|_| ProofError::BadKey)
    }
}

/// The device UUID of a public key: a UUIDv5 of the key's libp2p peer id (what the node
/// calls the client UUID). The node's own peer id is another key's (one per run), bound to
/// the device by a signature of this key (`murmur_node::device`).
pub fn device_uuid(public: &ed25519::PublicKey) -> Uuid {
    let peer = libp2p_identity::PublicKey::from(public.clone()).to_peer_id();
    Uuid::new_v5(&DEVICE_NAMESPACE, &peer.to_bytes())
}

/// What a store signs with: the device's keypair and this incarnation's nonce.
#[derive(Clone)]
pub struct Signer {
    keypair: ed25519::Keypair,
    key: AuthorKey,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({})", self.key.author())
    }
}

impl Signer {
    /// A signer for a new incarnation of the device `keypair`.
    pub fn new_incarnation(keypair: ed25519::Keypair) -> Signer {
        Signer::with_nonce(keypair, rand_nonce())
    }

    /// A signer for a given incarnation (tests and benches that need fixed authors).
    pub fn with_nonce(keypair: ed25519::Keypair, nonce: u128) -> Signer {
        let key = AuthorKey {
            public: Hash(keypair.public().to_bytes()),
            nonce,
        };
        Signer { keypair, key }
    }

    /// The device's keypair (it also signs membership events, [`crate::members`]).
    pub fn keypair(&self) -> &ed25519::Keypair {
        &self.keypair
    }

    /// The author key.
    pub fn key(&self) -> AuthorKey {
        self.key
    }

    /// The author UUID of this incarnation.
    pub fn author(&self) -> Uuid {
        self.key.author()
    }

    /// The device UUID.
    pub fn device(&self) -> Uuid {
        device_uuid(&self.keypair.public())
    }

    /// Chains `ops` (this author's, consecutive) from `prev` and signs the head at the last:
    /// the proof of the run. For tests and tools that build ops by hand; a store signs its
    /// own writes.
    pub fn prove(&self, prev: Hash, ops: &[Op]) -> Proof {
        let mut at = prev;
        for op in ops {
            at = chain_next(&at, &op_hash(op));
        }
        let first = ops.first().map_or(1, |op| op.seq);
        Proof {
            key: self.key,
            first,
            len: ops.len() as u64,
            prev,
            tail: Vec::new(),
            sig: self.sign_head(
                first.saturating_add(ops.len() as u64).saturating_sub(1),
                &at,
            ),
        }
    }

    /// Signs the head `seq` of this author's chain.
    pub fn sign_head(&self, seq: u64, chain: &Hash) -> Signature {
        let sig = self
            .keypair
            .sign(&head_message(&self.key.author(), seq, chain));
        let mut out = [0u8; 64];
        out.copy_from_slice(&sig);
        Signature(out)
    }
}

fn rand_nonce() -> u128 {
    // A v4 UUID is 122 random bits from the OS's generator.
    Uuid::new_v4().as_u128()
}

/// The message a head's signature covers.
pub fn head_message(author: &Uuid, seq: u64, chain: &Hash) -> Vec<u8> {
    let mut m = Vec::with_capacity(HEAD_CONTEXT.len() + 16 + 8 + 32);
    m.extend_from_slice(HEAD_CONTEXT);
    m.extend_from_slice(author.as_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(&chain.0);
    m
}

/// The next chain hash.
pub fn chain_next(prev: &Hash, op: &Hash) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&prev.0);
    h.update(&op.0);
    Hash(*h.finalize().as_bytes())
}

/// The hash of an op: every field, in a fixed, length-prefixed layout.
pub fn op_hash(op: &Op) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"murmur/op/v1");
    h.update(op.author.as_bytes());
    h.update(&op.seq.to_be_bytes());
    h.update(&op.time.to_be_bytes());
    h.update(&[method_code(op.method)]);
    put_str(&mut h, &op.resource);
    match op.uuid {
        Some(u) => h.update(&[1]).update(u.as_bytes()),
        None => h.update(&[0]),
    };
    match &op.property {
        Some(p) => {
            h.update(&[1]);
            put_str(&mut h, p);
        }
        None => {
            h.update(&[0]);
        }
    }
    match &op.value {
        Some(v) => {
            h.update(&[1]);
            v.hash_into(&mut h);
        }
        None => {
            h.update(&[0]);
        }
    }
    h.update(&(op.fields.len() as u64).to_be_bytes());
    for (k, v) in &op.fields {
        put_str(&mut h, k);
        v.hash_into(&mut h);
    }
    match op.count {
        Some(c) => h.update(&[1]).update(&c.to_be_bytes()),
        None => h.update(&[0]),
    };
    // Only when there are groups, so that ops without them keep the hashes they were
    // signed with.
    if !op.groups.is_empty() {
        h.update(b"groups");
        h.update(&(op.groups.len() as u64).to_be_bytes());
        for g in &op.groups {
            h.update(&g.rows.to_be_bytes());
            h.update(&g.hash.0);
        }
    }
    Hash(*h.finalize().as_bytes())
}

/// The most rows of one group of an owned batch.
pub const GROUP_ROWS: usize = 256;
/// About the most bytes of rows one group holds (a group is never cut, so a page of rows
/// may exceed its budget by less than one group); a single larger row is a group alone.
pub const GROUP_BYTES: usize = 1 << 20;

/// The leaf hash of one row of an owned batch: its UUID and its values in column order.
pub fn row_leaf(row: &OwnedRow) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"murmur/row/v1");
    h.update(row.uuid.as_bytes());
    h.update(&(row.values.len() as u64).to_be_bytes());
    for v in &row.values {
        v.hash_into(&mut h);
    }
    Hash(*h.finalize().as_bytes())
}

/// The hash of a group of rows: their leaves, in UUID order.
pub fn group_hash(leaves: impl ExactSizeIterator<Item = Hash>) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"murmur/rows/v1");
    h.update(&(leaves.len() as u64).to_be_bytes());
    for l in leaves {
        h.update(&l.0);
    }
    Hash(*h.finalize().as_bytes())
}

/// Cuts a batch's rows (sorted by UUID, each UUID once) into groups of at most
/// [`GROUP_ROWS`] rows and about [`GROUP_BYTES`] bytes: what its header commits to.
pub fn row_groups(rows: &[OwnedRow]) -> Vec<RowGroup> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < rows.len() {
        let mut end = start;
        let mut bytes = 0usize;
        while end < rows.len() && end - start < GROUP_ROWS {
            let size = row_size(&rows[end]);
            if end > start && bytes + size > GROUP_BYTES {
                break;
            }
            bytes += size;
            end += 1;
        }
        out.push(RowGroup {
            rows: (end - start) as u32,
            hash: group_hash(rows[start..end].iter().map(row_leaf)),
        });
        start = end;
    }
    out
}

/// About how many bytes a row takes encoded (the author's cut needs only be its own).
fn row_size(row: &OwnedRow) -> usize {
    use crate::value::Value;
    18 + row
        .values
        .iter()
        .map(|v| match v {
            Value::Text(t) => 9 + t.len(),
            _ => 9,
        })
        .sum::<usize>()
}

/// Checks a page of an owned batch's rows against what its header commits to: the rows,
/// in strictly increasing UUID order, fill whole groups of `header.groups` from
/// `first_group` on, each matching its hash, and a page that ends the batch (`last`) ends
/// at its last group. Returns how many groups the page holds. A header with no groups
/// commits to no rows: only an empty page of it passes.
pub fn check_rows(
    header: &Op,
    first_group: u32,
    rows: &[OwnedRow],
    last: bool,
) -> Result<usize, ProofError> {
    let bad = |why: String| Err(ProofError::Rows(why));
    let id = header.id();
    if rows.windows(2).any(|w| w[0].uuid >= w[1].uuid) {
        return bad(format!("rows of batch {id} out of UUID order"));
    }
    let groups = &header.groups;
    let first = first_group as usize;
    if groups.is_empty() {
        if rows.is_empty() && first == 0 && header.count.unwrap_or(0) == 0 {
            return Ok(0);
        }
        return bad(format!("batch {id} commits to no rows"));
    }
    if first > groups.len() {
        return bad(format!(
            "rows of batch {id} from group {first} of {}",
            groups.len()
        ));
    }
    let mut at = 0;
    let mut g = first;
    while at < rows.len() {
        let Some(group) = groups.get(g) else {
            return bad(format!("more rows than batch {id} has"));
        };
        let n = group.rows as usize;
        let Some(part) = rows.get(at..at + n) else {
            return bad(format!("group {g} of batch {id} cut short"));
        };
        if group_hash(part.iter().map(row_leaf)) != group.hash {
            return bad(format!(
                "the rows of group {g} of batch {id} are not the author's"
            ));
        }
        at += n;
        g += 1;
    }
    if last && g != groups.len() {
        return bad(format!(
            "a last page of batch {id} ends at group {g} of {}",
            groups.len()
        ));
    }
    Ok(g - first)
}

fn method_code(m: Method) -> u8 {
    match m {
        Method::OwnedBatchCreate => 1,
        Method::OwnedDelete => 2,
        Method::SharedCreate => 3,
        Method::SharedUpdate => 4,
        Method::SharedDelete => 5,
    }
}

fn put_str(h: &mut blake3::Hasher, s: &str) {
    h.update(&(s.len() as u64).to_be_bytes());
    h.update(s.as_bytes());
}

/// Proof that a run of one author's consecutive ops is the author's (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proof {
    /// The author's key; the run's ops must all name `key.author()`.
    pub key: AuthorKey,
    /// The seq of the run's first op (for an empty run: the seq after the proven one).
    pub first: u64,
    /// How many ops the run has.
    pub len: u64,
    /// The chain hash before `first`.
    pub prev: Hash,
    /// The op hashes after the run, up to the signed head.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tail: Vec<Hash>,
    /// The head's signature.
    pub sig: Signature,
}

/// The most op hashes a proof's tail may carry (heads are at most [`HEAD_EVERY`] apart).
pub const TAIL_CAP: usize = 4 * HEAD_EVERY as usize;

/// Why a proof does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The key is not an ed25519 public key.
    #[error("the author key is not an ed25519 public key")]
    BadKey,
    /// The signature does not match the recomputed head.
    #[error("the signature does not match the ops (altered, forged, or another author's)")]
    BadSignature,
    /// The run is not what the proof covers (wrong author, a gap, a seq out of range).
    #[error("{0}")]
    Shape(String),
    /// Rows of an owned batch that are not the ones its header commits to.
    #[error("{0}")]
    Rows(String),
}

/// What a verified proof establishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    /// The author.
    pub author: Uuid,
    /// Its device.
    pub device: Uuid,
    /// Chain hash after each op of the run, in order.
    pub chain: Vec<Hash>,
    /// The signed head: its seq and chain hash.
    pub head: (u64, Hash),
}

impl Proof {
    /// The bytes of a proof's fixed part on the wire, at most (CBOR, a map with its field
    /// names: the key, the seqs, the chain hash, the signature).
    const FIXED_WIRE_SIZE: usize = 256;
    /// The bytes of one tail hash on the wire, at most (a 32-byte string and its header).
    const HASH_WIRE_SIZE: usize = 34;

    /// The most bytes a proof whose tail has `tail` hashes takes on the wire (an upper
    /// bound of its CBOR, checked against the encoder in unit tests): pages count it per
    /// run.
    pub const fn wire_size_for(tail: usize) -> usize {
        Self::FIXED_WIRE_SIZE + 9 + tail * Self::HASH_WIRE_SIZE
    }

    /// The most bytes any proof a page carries takes: a tail of [`TAIL_CAP`] hashes (a
    /// replica sends no longer one, which its verifier would refuse).
    pub const MAX_WIRE_SIZE: usize = Self::wire_size_for(TAIL_CAP);

    /// An upper bound of the proof's encoded size on the wire.
    pub fn wire_size(&self) -> usize {
        Self::wire_size_for(self.tail.len())
    }

    /// The seq of the signed head.
    pub fn head_seq(&self) -> Option<u64> {
        (self
            .first
            .checked_add(self.len)?
            .checked_add(self.tail.len() as u64))?
        .checked_sub(1)
    }

    /// The proof of the sub-run `run[from..to]`, where `run` is the run this proof covers
    /// (the same signature: `prev` moves forward, the ops after `to` join the tail).
    pub fn narrow(&self, run: &[Op], from: usize, to: usize) -> Proof {
        let (from, to) = (
            from.min(run.len()),
            to.min(run.len()).max(from.min(run.len())),
        );
        let mut prev = self.prev;
        for op in &run[..from] {
            prev = chain_next(&prev, &op_hash(op));
        }
        let mut tail: Vec<Hash> = run[to..].iter().map(op_hash).collect();
        tail.extend_from_slice(&self.tail);
        Proof {
            key: self.key,
            first: self.first + from as u64,
            len: (to - from) as u64,
            prev,
            tail,
            sig: self.sig,
        }
    }

    /// Verifies the proof for `ops`, the run (consecutive seqs from `first`, all of the
    /// key's author). Returns the chain hashes of the run.
    pub fn verify<'a>(
        &self,
        ops: impl ExactSizeIterator<Item = &'a Op>,
    ) -> Result<Proven, ProofError> {
        let author = self.key.author();
        if self.tail.len() > TAIL_CAP {
            return Err(ProofError::Shape(format!(
                "a tail of {} hashes, limit {TAIL_CAP}",
                self.tail.len()
            )));
        }
        if self.first == 0 {
            return Err(ProofError::Shape("a run starting at seq 0".into()));
        }
        let n = ops.len();
        if n as u64 != self.len {
            return Err(ProofError::Shape(format!(
                "a proof of {} ops for a run of {n}",
                self.len
            )));
        }
        let Some(head) = self
            .head_seq()
            .filter(|h| (1..=crate::validate::MAX_SEQ).contains(h))
        else {
            return Err(ProofError::Shape(format!(
                "a run from seq {} of {n} ops and {} more is out of range",
                self.first,
                self.tail.len()
            )));
        };
        if self.first == 1 && self.prev != Hash::ZERO {
            return Err(ProofError::Shape(
                "a run from seq 1 must start from the empty chain".into(),
            ));
        }
        let mut at = self.prev;
        let mut chain = Vec::with_capacity(n);
        for (i, op) in ops.enumerate() {
            let seq = self.first + i as u64;
            if op.author != author || op.seq != seq {
                return Err(ProofError::Shape(format!(
                    "op {}#{} in a run of {author} at seq {seq}",
                    op.author, op.seq
                )));
            }
            at = chain_next(&at, &op_hash(op));
            chain.push(at);
        }
        for t in &self.tail {
            at = chain_next(&at, t);
        }
        let public = self.key.public_key()?;
        if !public.verify(&head_message(&author, head, &at), &self.sig.0) {
            return Err(ProofError::BadSignature);
        }
        Ok(Proven {
            author,
            device: device_uuid(&public),
            chain,
            head: (head, at),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;
    use crate::wire::to_cbor;
    use std::collections::BTreeMap;

    /// The sizes pages count proofs by are upper bounds of what the encoder writes.
    #[test]
    fn wire_size_is_an_upper_bound() {
        for tail in [0, 1, 23, 24, 255, 256, TAIL_CAP] {
            let p = Proof {
                key: AuthorKey {
                    public: Hash([0xff; 32]),
                    nonce: u128::MAX,
                },
                first: u64::MAX,
                len: u64::MAX,
                prev: Hash([0xff; 32]),
                tail: vec![Hash([0xff; 32]); tail],
                sig: Signature([0xff; 64]),
            };
            let bytes = to_cbor(&p).len();
            assert!(
                p.wire_size() >= bytes,
                "tail {tail}: {} < {bytes}",
                p.wire_size()
            );
            assert!(p.wire_size() <= Proof::MAX_WIRE_SIZE);
        }
    }

    fn signer() -> Signer {
        Signer::with_nonce(ed25519::Keypair::generate(), 7)
    }

    fn op(author: Uuid, seq: u64, name: &str) -> Op {
        Op {
            author,
            seq,
            time: 1000 + seq,
            method: Method::SharedCreate,
            resource: "tags".into(),
            uuid: Some(Uuid::from_u128(seq as u128)),
            property: None,
            value: None,
            fields: BTreeMap::from([("name".into(), Value::Text(name.into()))]),
            count: None,
            groups: Vec::new(),
        }
    }

    /// The author's ops 1..=n, their chain, and a head signed at `head`.
    fn log(s: &Signer, n: u64) -> (Vec<Op>, Vec<Hash>) {
        let mut at = Hash::ZERO;
        let mut chain = Vec::new();
        let ops: Vec<Op> = (1..=n).map(|q| op(s.author(), q, "x")).collect();
        for o in &ops {
            at = chain_next(&at, &op_hash(o));
            chain.push(at);
        }
        (ops, chain)
    }

    #[test]
    fn a_run_verifies_from_any_start_with_a_tail_to_the_head() {
        let s = signer();
        let (ops, chain) = log(&s, 10);
        let sig = s.sign_head(10, &chain[9]);
        // Ops 4..=7, the hashes of 8..=10 as the tail.
        let proof = Proof {
            key: s.key(),
            first: 4,
            len: 4,
            prev: chain[2],
            tail: ops[7..].iter().map(op_hash).collect(),
            sig,
        };
        let p = proof.verify(ops[3..7].iter()).unwrap();
        assert_eq!(p.author, s.author());
        assert_eq!(p.device, s.device());
        assert_eq!(p.chain, chain[3..7].to_vec());
        assert_eq!(p.head, (10, chain[9]));
        // An empty run proves the log reached seq 7.
        let empty = Proof {
            first: 8,
            len: 0,
            prev: chain[6],
            ..proof.clone()
        };
        assert_eq!(empty.verify([].iter()).unwrap().head.0, 10);
    }

    #[test]
    fn altered_forged_or_misattributed_ops_fail() {
        let s = signer();
        let (ops, chain) = log(&s, 3);
        let proof = Proof {
            key: s.key(),
            first: 1,
            len: 3,
            prev: Hash::ZERO,
            tail: vec![],
            sig: s.sign_head(3, &chain[2]),
        };
        assert!(proof.verify(ops.iter()).is_ok());
        // Other bytes under the same signature.
        let mut altered = ops.clone();
        altered[1]
            .fields
            .insert("name".into(), Value::Text("evil".into()));
        assert_eq!(proof.verify(altered.iter()), Err(ProofError::BadSignature));
        // A valid signature of another author over the same run.
        let other = signer();
        let stolen = Proof {
            key: other.key(),
            ..proof.clone()
        };
        assert!(matches!(
            stolen.verify(ops.iter()),
            Err(ProofError::Shape(_))
        ));
        let relabelled: Vec<Op> = ops
            .iter()
            .map(|o| Op {
                author: other.author(),
                ..o.clone()
            })
            .collect();
        assert_eq!(
            stolen.verify(relabelled.iter()),
            Err(ProofError::BadSignature)
        );
        // A squatted future seq: the author never signed a head there.
        let squat = Proof {
            first: 4,
            len: 1,
            prev: chain[2],
            ..proof.clone()
        };
        assert_eq!(
            squat.verify([op(s.author(), 4, "x")].iter()),
            Err(ProofError::BadSignature)
        );
    }

    #[test]
    fn incarnations_of_one_device_are_different_authors_of_the_same_device() {
        let kp = ed25519::Keypair::generate();
        let a = Signer::new_incarnation(kp.clone());
        let b = Signer::new_incarnation(kp);
        assert_ne!(a.author(), b.author());
        assert_eq!(a.device(), b.device());
        assert_eq!(a.key().device().unwrap(), a.device());
    }

    #[test]
    fn keys_and_signatures_round_trip_through_cbor() {
        let s = signer();
        let (ops, chain) = log(&s, 1);
        let proof = Proof {
            key: s.key(),
            first: 1,
            len: 1,
            prev: Hash::ZERO,
            tail: vec![],
            sig: s.sign_head(1, &chain[0]),
        };
        let bytes = crate::wire::to_cbor(&proof);
        let back: Proof = crate::wire::from_cbor(&bytes, 1024, "proof").unwrap();
        assert_eq!(back, proof);
        assert!(back.verify(ops.iter()).is_ok());
        // Key 32 + nonce 16 + prev 32 + sig 64, the seqs and the field names.
        assert!(bytes.len() < 200, "{} bytes", bytes.len());
    }
}

/// What checking a batch's proofs found: the chain of the proven ops (for the log), and
/// every op that no valid proof covers, with why.
#[derive(Debug, Default)]
pub(crate) struct Checked {
    /// The proven ops' chain, heads and keys.
    pub chain: Chain,
    /// Proven ops.
    pub proven: std::collections::HashSet<(Uuid, u64)>,
    /// Ops whose proof failed, with the failure (the others unproven have no proof).
    pub failed: std::collections::HashMap<(Uuid, u64), ProofError>,
}

/// Checks every proof of a batch against the batch's ops (each distinct op once; an owned
/// batch's header may come with several pages of rows).
pub(crate) fn check_batch<'a>(ops: impl Iterator<Item = &'a Op>, proofs: &[Proof]) -> Checked {
    use std::collections::BTreeMap;
    let mut by_author: BTreeMap<Uuid, BTreeMap<u64, &Op>> = BTreeMap::new();
    for op in ops {
        by_author
            .entry(op.author)
            .or_default()
            .entry(op.seq)
            .or_insert(op);
    }
    let mut out = Checked::default();
    for proof in proofs {
        let author = proof.key.author();
        let end = proof.first.saturating_add(proof.len);
        let run: Vec<&Op> = by_author
            .get(&author)
            .map(|m| m.range(proof.first..end).map(|(_, op)| *op).collect())
            .unwrap_or_default();
        match proof.verify(run.iter().copied()) {
            Ok(p) => {
                out.chain.add_run(author, proof.first, proof.prev, &p.chain);
                out.chain.heads.push(Head {
                    author,
                    seq: p.head.0,
                    hash: p.head.1,
                    sig: proof.sig,
                    tail: proof.tail.clone(),
                });
                out.chain.keys.push(proof.key);
                for op in run {
                    out.proven.insert((op.author, op.seq));
                }
            }
            Err(e) => {
                for op in run {
                    out.failed.insert((op.author, op.seq), e.clone());
                }
            }
        }
    }
    out.chain.seal();
    out
}

/// Whether every op of `ops` is covered by a valid proof of `proofs`: the first that is not,
/// with why (what a gossip message is checked with before it is forwarded).
pub fn verify_ops(
    ops: &[Op],
    proofs: &[Proof],
) -> Result<(), (crate::op::OpId, Option<ProofError>)> {
    let checked = check_batch(ops.iter(), proofs);
    for op in ops {
        let key = (op.author, op.seq);
        if !checked.proven.contains(&key) {
            return Err((op.id(), checked.failed.get(&key).cloned()));
        }
    }
    Ok(())
}

/// A signed head as a replica keeps it: the seq, its chain hash, the signature, and the op
/// hashes from the first op after what the replica holds up to the head (empty when it
/// holds the ops up to the head).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Head {
    /// The author.
    pub author: Uuid,
    /// The head's seq.
    pub seq: u64,
    /// Its chain hash.
    pub hash: Hash,
    /// The author's signature of it.
    pub sig: Signature,
    /// Op hashes of `seq - tail.len() + 1 ..= seq`.
    pub tail: Vec<Hash>,
}

/// What the op log stores beside the ops of one write: the chain hash before each op, and
/// the heads that prove them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Chain {
    /// Per op (author, seq), the chain hash before it; sorted.
    prevs: Vec<(Uuid, u64, Hash)>,
    /// Heads to keep.
    pub heads: Vec<Head>,
    /// Keys of the authors proven.
    pub keys: Vec<AuthorKey>,
    /// Author -> device, for every author known here (what owned rows are owned by).
    pub devices: std::collections::HashMap<Uuid, Uuid>,
}

impl Chain {
    /// Records that the ops `first..` of `author` follow `prev` with chain hashes `chain`.
    pub(crate) fn add_run(&mut self, author: Uuid, first: u64, prev: Hash, chain: &[Hash]) {
        let mut at = prev;
        for (i, h) in chain.iter().enumerate() {
            self.prevs.push((author, first + i as u64, at));
            at = *h;
        }
    }

    /// Records the chain hash before one op.
    pub(crate) fn push_prev(&mut self, author: Uuid, seq: u64, prev: Hash) {
        self.prevs.push((author, seq, prev));
    }

    /// Sorts what was added (call once, before [`Chain::prev_of`]).
    pub(crate) fn seal(&mut self) {
        self.prevs.sort_unstable_by_key(|(a, s, _)| (*a, *s));
        self.prevs.dedup_by_key(|(a, s, _)| (*a, *s));
    }

    /// The chain hash before op `seq` of `author`, if known.
    pub(crate) fn prev_of(&self, author: Uuid, seq: u64) -> Option<Hash> {
        self.prevs
            .binary_search_by_key(&(author, seq), |(a, s, _)| (*a, *s))
            .ok()
            .map(|i| self.prevs[i].2)
    }
}
