//! Checking gossip before it is used: a message from the network is decoded with a size
//! bound and checked (the number of ops, that every op is the signer's own, each op's
//! schema, the bounds of a version announcement) with no side effects. A refusal is a
//! [`GossipRejection`], which names the metric label it is counted under.

use murmur_store::validate::{MAX_SEQ, validate_op};
use murmur_store::wire::from_cbor;
use murmur_store::{OpId, Registry, Rejection, StoreError};
use uuid::Uuid;

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
    /// An op whose author is not the message's signer.
    #[error("op {op} claims author {claimed} but was signed by {signer}")]
    ForgedAuthor {
        /// The op.
        op: OpId,
        /// The author it names.
        claimed: Uuid,
        /// Who signed the message.
        signer: Uuid,
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
}

impl GossipRejection {
    /// The metric label: "decode", "oversized", "forged_author", "malformed", or the
    /// store's [`murmur_store::RejectReason::label`].
    pub fn label(&self) -> &'static str {
        match self {
            GossipRejection::Decode(_) => "decode",
            GossipRejection::TooManyOps { .. } | GossipRejection::TooManyAuthors { .. } => {
                "oversized"
            }
            GossipRejection::ForgedAuthor { .. } => "forged_author",
            GossipRejection::SeqOutOfRange { .. } => "malformed",
            GossipRejection::Invalid(r) => r.label(),
        }
    }
}

/// Decodes and checks a gossip message signed by `author` without side effects: size and
/// CBOR, the number of ops, that every op is the signer's own, each op's schema, and the
/// bounds of a version announcement.
///
/// Timestamps are not checked here: an op far in the future is refused by the store's drift
/// check when applied (counted as `drift`, no penalty: an honest clock can be wrong), and an
/// op at time 0 is applied as a very old write that loses every last-writer-wins merge.
pub fn check_gossip_message(
    registry: &Registry,
    author: Uuid,
    data: &[u8],
) -> Result<Gossip, GossipRejection> {
    let msg: Gossip =
        from_cbor(data, GOSSIP_DECODE_CAP, "gossip message").map_err(GossipRejection::Decode)?;
    match &msg {
        Gossip::Ops(ops) => {
            if ops.len() > GOSSIP_OPS_CAP {
                return Err(GossipRejection::TooManyOps { ops: ops.len() });
            }
            for op in ops {
                if op.author != author {
                    return Err(GossipRejection::ForgedAuthor {
                        op: op.id(),
                        claimed: op.author,
                        signer: author,
                    });
                }
                validate_op(registry, op)?;
            }
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

    use murmur_store::RejectReason;
    use murmur_store::wire::to_cbor;
    use murmur_store::{Method, Op};

    use super::*;

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
        }
    }

    fn check(author: Uuid, msg: &Gossip) -> Result<Gossip, GossipRejection> {
        check_gossip_message(&Registry::default_library(), author, &to_cbor(msg))
    }

    #[test]
    fn gossip_ops_must_be_few_and_the_signers_own() {
        let me = Uuid::from_u128(1);
        assert!(check(me, &Gossip::Ops(vec![op(me, 1)])).is_ok());
        let many = (1..=GOSSIP_OPS_CAP as u64 + 1).map(|s| op(me, s)).collect();
        let r = check(me, &Gossip::Ops(many)).unwrap_err();
        assert!(matches!(r, GossipRejection::TooManyOps { ops } if ops == GOSSIP_OPS_CAP + 1));
        assert_eq!(r.label(), "oversized");
        let forged = Gossip::Ops(vec![op(Uuid::from_u128(2), 1)]);
        let r = check(me, &forged).unwrap_err();
        assert!(matches!(r, GossipRejection::ForgedAuthor { signer, .. } if signer == me));
        assert_eq!(r.label(), "forged_author");
        let r = check(me, &Gossip::Ops(vec![op(me, 0)])).unwrap_err();
        assert!(matches!(
            r,
            GossipRejection::Invalid(Rejection {
                reason: RejectReason::Malformed,
                ..
            })
        ));
        assert_eq!(r.label(), "malformed");
        let r = check_gossip_message(&Registry::default_library(), me, b"\xff").unwrap_err();
        assert!(matches!(r, GossipRejection::Decode(_)));
        assert_eq!(r.label(), "decode");
    }

    #[test]
    fn an_op_the_schema_refuses_is_counted_under_the_stores_reason() {
        let me = Uuid::from_u128(1);
        let mut unknown = op(me, 1);
        unknown.resource = "no_such_resource".into();
        let r = check(me, &Gossip::Ops(vec![unknown])).unwrap_err();
        assert_eq!(r.label(), RejectReason::UnknownResource.label());
    }

    /// Regression: announcements of `u64::MAX` for a few authors made the lag sum overflow
    /// (a panic in the sync loop in debug builds); they are refused now, and the sums
    /// saturate anyway.
    #[test]
    fn version_announcements_are_bounded() {
        let me = Uuid::from_u128(1);
        let versions = |n: u128, seq: u64| Gossip::Versions {
            contiguous: (0..n).map(|i| (Uuid::from_u128(i + 1), seq)).collect(),
            horizon: BTreeMap::new(),
            sent_at_ms: 0,
        };
        assert!(check(me, &versions(3, 10)).is_ok());
        let r = check(me, &versions(3, u64::MAX)).unwrap_err();
        assert!(matches!(
            r,
            GossipRejection::SeqOutOfRange { seq: u64::MAX, .. }
        ));
        assert_eq!(r.label(), "malformed");
        let r = check(me, &versions(VERSIONS_AUTHORS_CAP as u128 + 1, 1)).unwrap_err();
        assert!(matches!(r, GossipRejection::TooManyAuthors { .. }));
        assert_eq!(r.label(), "oversized");
        let total = [u64::MAX, u64::MAX, u64::MAX]
            .into_iter()
            .fold(0u64, u64::saturating_add);
        assert_eq!(total, u64::MAX);
    }
}
