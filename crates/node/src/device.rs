//! Which device a peer is.
//!
//! A node's peer id names one run of it, not its data dir: the swarm's transport key is a
//! new ed25519 keypair on every start. Two copies of one data dir running at once (a second
//! machine set up from a backup, beside the original) are therefore two peers to everyone
//! else: each gets its own gossip and its own pulls. Were the peer id the device key's, a
//! third node would take the second copy's connection for a second connection of the
//! first, and send it nothing.
//!
//! The *device* is named by the device key (`identity.key`), which also signs the device's
//! ops ([`murmur_store::proof`]); its client UUID is [`device_uuid`] of that key. A node
//! tells its peers which device it is with a [`DeviceBinding`] in each version
//! announcement: the device's public key, and the device key's signature over a context
//! and the run's peer id. gossipsub checks that the announcement was signed by that peer
//! id's key, so the pair proves that the peer holds both keys: no peer can claim another's
//! device, and a binding copied from another peer's announcement names that peer, not the
//! copier.
//!
//! Pure code: no I/O.

use libp2p::PeerId;
use libp2p::identity::ed25519;
use murmur_store::proof::{Hash, Signature, device_uuid};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Domain separation of the signed message.
const BINDING_CONTEXT: &[u8] = b"murmur/device-binding/v1";

/// A device's statement that a peer id is one of its runs (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceBinding {
    /// The device's ed25519 public key.
    pub device: Hash,
    /// The device key's signature of [`binding_message`] of the peer id.
    pub sig: Signature,
}

/// Why a binding does not prove its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    /// The device field is not an ed25519 public key.
    #[error("the device key of the binding is not an ed25519 public key")]
    BadKey,
    /// The signature is not the device key's over this peer id.
    #[error("the binding's signature is not its device key's over the sender's peer id")]
    BadSignature,
}

impl DeviceBinding {
    /// The binding of the run `peer` to the device `device`.
    pub fn sign(device: &ed25519::Keypair, peer: &PeerId) -> DeviceBinding {
        let sig = device.sign(&binding_message(peer));
        let mut out = [0u8; 64];
        // An ed25519 signature is 64 bytes.
        out.copy_from_slice(&sig);
        DeviceBinding {
            device: Hash(device.public().to_bytes()),
            sig: Signature(out),
        }
    }

    /// Checks that the binding was signed by its device key for `peer`, and returns the
    /// device's client UUID.
    pub fn verify(&self, peer: &PeerId) -> Result<Uuid, BindingError> {
        let key =
            ed25519::PublicKey::try_from_bytes(&self.device.0).map_err(|_| BindingError::BadKey)?;
        if !key.verify(&binding_message(peer), &self.sig.0) {
            return Err(BindingError::BadSignature);
        }
        Ok(device_uuid(&key))
    }
}

/// The message a binding's signature covers: a context and the peer id's bytes.
pub fn binding_message(peer: &PeerId) -> Vec<u8> {
    let id = peer.to_bytes();
    let mut m = Vec::with_capacity(BINDING_CONTEXT.len() + id.len());
    m.extend_from_slice(BINDING_CONTEXT);
    m.extend_from_slice(&id);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binding_proves_its_device_for_its_peer_only() {
        let device = ed25519::Keypair::generate();
        let peer = PeerId::random();
        let b = DeviceBinding::sign(&device, &peer);
        assert_eq!(b.verify(&peer), Ok(device_uuid(&device.public())));
        // Copied by another peer: it names the peer it was signed for.
        assert_eq!(b.verify(&PeerId::random()), Err(BindingError::BadSignature));
        // Another device's key claimed, signed with mine: refused.
        let victim = ed25519::Keypair::generate();
        let claimed = DeviceBinding {
            device: Hash(victim.public().to_bytes()),
            ..b
        };
        assert_eq!(claimed.verify(&peer), Err(BindingError::BadSignature));
        let not_a_key = DeviceBinding {
            device: Hash([0xff; 32]),
            ..b
        };
        assert!(not_a_key.verify(&peer).is_err());
    }
}
