//! Checking gossip before it is used: a message from the network is decoded with a size
//! bound and checked (the number of ops, that every op is the signer's own, each op's
//! schema, the bounds of a version announcement) with no side effects. A refusal is a
//! [`GossipRejection`], which names the metric label it is counted under.

use murmur_store::proof::{ProofError, verify_ops};
use murmur_store::validate::{MAX_SEQ, split_unknown_op};
use murmur_store::wire::from_cbor;
use murmur_store::{OpId, Registry, Rejection, StoreError};
use uuid::Uuid;

use crate::device::BindingError;
use crate::protocol::{GOSSIP_OPS_CAP, Gossip};

/// Largest gossip message accepted.
pub(crate) const GOSSIP_DECODE_CAP: usize = 1024 * 1024;
/// Most authors a version announcement may list (each of `contiguous` and `horizon`).
pub const VERSIONS_AUTHORS_CAP: usize = 4096;

/// Why a gossip message was refused. [`GossipRejection::label`] is the `reason` label of
/// the `ops_rejected` metric it is counted under.
#[derive(Debug, thiserror::Error)]
pub enum GossipRejection {
    /// Too large, or not a CBOR gossip message.
    #[error("{0}")]
    Decode(StoreError),
    /// More ops than one message may carry.
    #[error("{ops} ops in one message, limit {GOSSIP_OPS_CAP}")]
    TooManyOps {
        /// Ops in the message.
        ops: usize,
    },
    /// A version announcement listing more authors than allowed.
    #[error(
        "version announcement of {contiguous} and {horizon} authors, limit {VERSIONS_AUTHORS_CAP}"
    )]
    TooManyAuthors {
        /// Authors in `contiguous`.
        contiguous: usize,
        /// Authors in `horizon`.
        horizon: usize,
    },
    /// An op no valid proof of its author covers.
    #[error("op {op}: {}", match why { Some(e) => e.to_string(), None => "no proof of its author".into() })]
    Unproven {
        /// The op.
        op: OpId,
        /// Why its proof failed (`None`: it had none).
        why: Option<ProofError>,
    },
    /// A version announcement with a seq no log can reach.
    #[error("version announcement with seq {seq} for {author}, above {MAX_SEQ}")]
    SeqOutOfRange {
        /// The author.
        author: Uuid,
        /// The seq announced.
        seq: u64,
    },
    /// An op the store's validation refuses (unknown resource or field, wrong type,
    /// malformed).
    #[error(transparent)]
    Invalid(#[from] Rejection),
    /// A version announcement whose device binding is not its device key's signature over
    /// the sender's peer id (see [`crate::device`]).
    #[error("version announcement: {0}")]
    Binding(#[from] BindingError),
}

impl GossipRejection {
    /// The metric label: "decode", "oversized", "unproven", "bad_proof", "malformed",
    /// "bad_binding", or the store's [`murmur_store::RejectReason::label`].
    pub fn label(&self) -> &'static str {
        match self {
            GossipRejection::Decode(_) => "decode",
            GossipRejection::TooManyOps { .. } | GossipRejection::TooManyAuthors { .. } => {
                "oversized"
            }
            GossipRejection::Unproven { why: None, .. } => "unproven",
            GossipRejection::Unproven { why: Some(_), .. } => "bad_proof",
            GossipRejection::SeqOutOfRange { .. } => "malformed",
            GossipRejection::Invalid(r) => r.label(),
            GossipRejection::Binding(_) => "bad_binding",
        }
    }
}

/// Decodes and checks a gossip message without side effects: size and CBOR, the number of
/// ops, that every op is proven to be its author's ([`murmur_store::proof`]: whoever
/// relays it), each op's schema, and the bounds of a version announcement.
///
/// Timestamps are not checked here: an op far in the future is refused by the store's drift
/// check when applied (counted as `drift`, no penalty: an honest clock can be wrong), and an
/// op at time 0 is applied as a very old write that loses every last-writer-wins merge.
pub fn check_gossip_message(registry: &Registry, data: &[u8]) -> Result<Gossip, GossipRejection> {
    let msg: Gossip =
        from_cbor(data, GOSSIP_DECODE_CAP, "gossip message").map_err(GossipRejection::Decode)?;
    match &msg {
        Gossip::Ops { ops, proofs } => {
            if ops.len() > GOSSIP_OPS_CAP || proofs.len() > GOSSIP_OPS_CAP {
                return Err(GossipRejection::TooManyOps { ops: ops.len() });
            }
            // An op of a resource or field this build does not know is no fault of the
            // sender (it runs a newer schema): accepted, and kept by the store.
            for op in ops {
                split_unknown_op(registry, op)?;
            }
            verify_ops(ops, proofs).map_err(|(op, why)| GossipRejection::Unproven { op, why })?;
        }
        Gossip::Versions {
            contiguous,
            horizon,
            ..
        } => {
            if contiguous.len() > VERSIONS_AUTHORS_CAP || horizon.len() > VERSIONS_AUTHORS_CAP {
                return Err(GossipRejection::TooManyAuthors {
                    contiguous: contiguous.len(),
                    horizon: horizon.len(),
                });
            }
            if let Some((a, s)) = contiguous
                .iter()
                .chain(horizon)
                .find(|(_, s)| **s > MAX_SEQ)
            {
                return Err(GossipRejection::SeqOutOfRange {
                    author: *a,
                    seq: *s,
                });
            }
        }
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use libp2p::PeerId;
    use libp2p::identity::ed25519;
    use murmur_store::RejectReason;
    use murmur_store::proof::{Hash, Signer};
    use murmur_store::wire::to_cbor;
    use murmur_store::{Method, Op};

    use super::*;
    use crate::device::DeviceBinding;

    fn op(author: Uuid, seq: u64) -> Op {
        Op {
            author,
            seq,
            time: 1,
            method: Method::SharedDelete,
            resource: "tags".into(),
            uuid: Some(Uuid::from_u128(9)),
            property: None,
            value: None,
            fields: BTreeMap::new(),
            count: None,
            groups: Vec::new(),
        }
    }

    fn check(msg: &Gossip) -> Result<Gossip, GossipRejection> {
        check_gossip_message(&Registry::default_library(), &to_cbor(msg))
    }

    fn signer() -> Signer {
        Signer::new_incarnation(ed25519::Keypair::generate())
    }

    fn signed(s: &Signer, ops: Vec<Op>) -> Gossip {
        let proofs = vec![s.prove(Hash::ZERO, &ops)];
        Gossip::Ops { ops, proofs }
    }

    #[test]
    fn gossip_ops_must_be_few_and_proven() {
        let s = signer();
        let me = s.author();
        assert!(check(&signed(&s, vec![op(me, 1)])).is_ok());
        let many = (1..=GOSSIP_OPS_CAP as u64 + 1).map(|q| op(me, q)).collect();
        let r = check(&signed(&s, many)).unwrap_err();
        assert!(matches!(r, GossipRejection::TooManyOps { ops } if ops == GOSSIP_OPS_CAP + 1));
        assert_eq!(r.label(), "oversized");
        // Another author's op under my proof, and under none.
        let other = signer();
        let forged = Gossip::Ops {
            ops: vec![op(other.author(), 1)],
            proofs: vec![s.prove(Hash::ZERO, &[op(me, 1)])],
        };
        let r = check(&forged).unwrap_err();
        assert!(matches!(r, GossipRejection::Unproven { why: None, .. }));
        assert_eq!(r.label(), "unproven");
        // My signature over other bytes.
        let mut altered = op(me, 1);
        let proofs = vec![s.prove(Hash::ZERO, std::slice::from_ref(&altered))];
        altered.uuid = Some(Uuid::from_u128(77));
        let r = check(&Gossip::Ops {
            ops: vec![altered],
            proofs,
        })
        .unwrap_err();
        assert_eq!(r.label(), "bad_proof");
        let r = check(&Gossip::Ops {
            ops: vec![op(me, 0)],
            proofs: vec![],
        })
        .unwrap_err();
        assert!(matches!(
            r,
            GossipRejection::Invalid(Rejection {
                reason: RejectReason::Malformed,
                ..
            })
        ));
        assert_eq!(r.label(), "malformed");
        let r = check_gossip_message(&Registry::default_library(), b"\xff").unwrap_err();
        assert!(matches!(r, GossipRejection::Decode(_)));
        assert_eq!(r.label(), "decode");
    }

    #[test]
    fn an_op_of_a_newer_schema_is_accepted_and_a_bad_one_counted_under_the_stores_reason() {
        let s = signer();
        let mut unknown = op(s.author(), 1);
        unknown.resource = "no_such_resource".into();
        assert!(check(&signed(&s, vec![unknown])).is_ok());
        let mut batch = op(s.author(), 1);
        batch.resource = "no_such_resource".into();
        batch.method = Method::OwnedBatchCreate;
        batch.uuid = None;
        let r = check(&signed(&s, vec![batch])).unwrap_err();
        assert_eq!(r.label(), RejectReason::UnknownResource.label());
        let mut wrong = op(s.author(), 1);
        wrong.method = Method::SharedUpdate;
        wrong.property = Some("name".into());
        wrong.value = Some(murmur_store::Value::Int(1));
        let r = check(&signed(&s, vec![wrong])).unwrap_err();
        assert_eq!(r.label(), RejectReason::WrongType.label());
    }

    /// Regression: announcements of `u64::MAX` for a few authors made the lag sum overflow
    /// (a panic in the sync loop in debug builds); they are refused now, and the sums
    /// saturate anyway.
    #[test]
    fn version_announcements_are_bounded() {
        let versions = |n: u128, seq: u64| Gossip::Versions {
            device: DeviceBinding::sign(&ed25519::Keypair::generate(), &PeerId::random()),
            contiguous: (0..n).map(|i| (Uuid::from_u128(i + 1), seq)).collect(),
            horizon: BTreeMap::new(),
            authors: None,
            schema: None,
            sent_at_ms: 0,
        };
        assert!(check(&versions(3, 10)).is_ok());
        let r = check(&versions(3, u64::MAX)).unwrap_err();
        assert!(matches!(
            r,
            GossipRejection::SeqOutOfRange { seq: u64::MAX, .. }
        ));
        assert_eq!(r.label(), "malformed");
        let r = check(&versions(VERSIONS_AUTHORS_CAP as u128 + 1, 1)).unwrap_err();
        assert!(matches!(r, GossipRejection::TooManyAuthors { .. }));
        assert_eq!(r.label(), "oversized");
        let total = [u64::MAX, u64::MAX, u64::MAX]
            .into_iter()
            .fold(0u64, u64::saturating_add);
        assert_eq!(total, u64::MAX);
    }
}
