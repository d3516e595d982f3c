//! CBOR encoding (ciborium) of everything that crosses the network, with a size bound on
//! decoding so that a peer cannot make the node allocate without limit.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::StoreError;

/// Encodes a value as CBOR.
pub fn to_cbor<T: Serialize>(value: &T) -> Vec<u8> {
    let mut buf = Vec::new();
    // Serialising our own types into a Vec cannot fail: no I/O, no unsupported types.
    if let Err(e) = ciborium::into_writer(value, &mut buf) {
        tracing::error!("CBOR encoding failed: {e}");
    }
    buf
}

/// Decodes CBOR of at most `max_len` bytes; `what` names the message in the error.
pub fn from_cbor<T: DeserializeOwned>(
    bytes: &[u8],
    max_len: usize,
    what: &'static str,
) -> Result<T, StoreError> {
    if bytes.len() > max_len {
        return Err(StoreError::Decode {
            what,
            reason: format!("{} bytes, limit {max_len}", bytes.len()),
        });
    }
    ciborium::from_reader(bytes).map_err(|e| StoreError::Decode {
        what,
        reason: e.to_string(),
    })
}
