//! The blake3 hash type of the authorship proofs ([`crate::proof`]) and of the row
//! commitments an owned batch's header carries ([`crate::op::RowGroup`]). Its own module
//! so that both `op` and `proof` can name it (`proof` imports `op`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A blake3 hash (an op's, a chain's, an owned row's or a group of rows').
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The chain hash before an author's first op.
    pub const ZERO: Hash = Hash([0; 32]);
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", hex::encode(&self.0[..8]))
    }
}

impl Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_bytes::Bytes::new(&self.0).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        let b = serde_bytes::ByteArray::<32>::deserialize(d)?;
        Ok(Hash(b.into_array()))
    }
}
