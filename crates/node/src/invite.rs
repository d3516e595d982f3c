//! Invitations: what a member gives a new device so that it can join the library.
//!
//! An invitation holds the library secret (to open connections), the invitation's id and
//! one-time key (the member recorded an `Invite` event naming its public key, see
//! [`murmur_store::members`]), the member's addresses (dialed first: the member that made
//! the invitation knows it before any other does) and its expiry. It is written as one
//! short string, `murmur-invite-` and the lower-case base32 of its CBOR, which a person
//! can paste or keep in a file (it is a secret, like the library key: once used, it lets
//! no one else in).
//!
//! Pure code: no I/O.

use libp2p::Multiaddr;
use libp2p::identity::ed25519;
use murmur_store::members::Claim;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::identity::LibrarySecret;

/// The prefix of an invitation's text.
pub const PREFIX: &str = "murmur-invite-";
/// The most addresses an invitation carries.
pub const ADDRS_CAP: usize = 4;
/// The longest invitation text accepted.
pub const TEXT_CAP: usize = 2048;

/// An invitation (see the module docs).
#[derive(Clone, PartialEq, Eq)]
pub struct Invitation {
    /// The library secret.
    pub secret: LibrarySecret,
    /// The invitation's id.
    pub id: Uuid,
    /// The seed of its one-time ed25519 key.
    pub key_seed: [u8; 32],
    /// Where the member that made it listens.
    pub addrs: Vec<Multiaddr>,
    /// When it expires (NTP64).
    pub expires: u64,
}

impl std::fmt::Debug for Invitation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invitation")
            .field("library", &self.secret.library_id())
            .field("id", &self.id)
            .field("addrs", &self.addrs)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct Wire {
    #[serde(with = "serde_bytes")]
    s: Vec<u8>,
    i: Uuid,
    #[serde(with = "serde_bytes")]
    k: Vec<u8>,
    a: Vec<String>,
    e: u64,
}

/// Why an invitation's text is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a murmur invitation: {0}")]
pub struct BadInvitation(String);

impl Invitation {
    /// A new invitation of the library `secret`, reachable at `addrs`, expiring at `expires`.
    pub fn generate(secret: LibrarySecret, addrs: Vec<Multiaddr>, expires: u64) -> Invitation {
        Invitation {
            secret,
            id: Uuid::now_v7(),
            key_seed: rand::random(),
            addrs: addrs.into_iter().take(ADDRS_CAP).collect(),
            expires,
        }
    }

    /// Its one-time keypair.
    pub fn keypair(&self) -> ed25519::Keypair {
        let mut seed = self.key_seed;
        match ed25519::SecretKey::try_from_bytes(&mut seed) {
            Ok(k) => ed25519::Keypair::from(k),
            // Every 32 bytes are an ed25519 secret key.
            Err(_) => ed25519::Keypair::generate(),
        }
    }

    /// The claim of it by `device`, named `name`.
    pub fn claim(&self, device: &ed25519::Keypair, name: &str) -> Claim {
        Claim::new(self.id, device, name, &self.keypair())
    }

    /// The text form.
    pub fn to_text(&self) -> String {
        let w = Wire {
            s: self.secret.0.to_vec(),
            i: self.id,
            k: self.key_seed.to_vec(),
            a: self.addrs.iter().map(|a| a.to_string()).collect(),
            e: self.expires,
        };
        format!(
            "{PREFIX}{}",
            base32_encode(&murmur_store::wire::to_cbor(&w))
        )
    }

    /// Parses [`Invitation::to_text`] (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<Invitation, BadInvitation> {
        let text = text.trim();
        if text.len() > TEXT_CAP {
            return Err(BadInvitation(format!("{} characters", text.len())));
        }
        let body = text
            .strip_prefix(PREFIX)
            .ok_or_else(|| BadInvitation(format!("it does not start with {PREFIX}")))?;
        let bytes = base32_decode(body).ok_or_else(|| BadInvitation("bad base32".into()))?;
        let w: Wire = murmur_store::wire::from_cbor(&bytes, TEXT_CAP, "invitation")
            .map_err(|e| BadInvitation(e.to_string()))?;
        let secret: [u8; 32] =
            w.s.try_into()
                .map_err(|_| BadInvitation("the secret is not 32 bytes".into()))?;
        let key_seed: [u8; 32] =
            w.k.try_into()
                .map_err(|_| BadInvitation("the key is not 32 bytes".into()))?;
        let addrs =
            w.a.iter()
                .take(ADDRS_CAP)
                .map(|a| a.parse::<Multiaddr>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| BadInvitation(format!("bad address: {e}")))?;
        Ok(Invitation {
            secret: LibrarySecret(secret),
            id: w.i,
            key_seed,
            addrs,
            expires: w.e,
        })
    }
}

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Lower-case RFC 4648 base32, without padding.
pub fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buf, mut bits) = (0u32, 0u32);
    for b in bytes {
        buf = (buf << 8) | u32::from(*b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buf >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Decodes [`base32_encode`] (either case); `None` on a character outside the alphabet.
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|a| *a == c.to_ascii_lowercase())? as u32;
        buf = (buf << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((buf >> bits) & 0xff) as u8);
        }
        buf &= 0xffff;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invitation_round_trips_as_text() {
        let inv = Invitation::generate(
            LibrarySecret::generate(),
            vec!["/ip4/127.0.0.1/tcp/7001".parse().unwrap()],
            12345,
        );
        let text = inv.to_text();
        assert!(text.starts_with(PREFIX) && text.len() < 300, "{text}");
        assert_eq!(Invitation::parse(&format!(" {text}\n")).unwrap(), inv);
        assert!(Invitation::parse("murmur-invite-!!").is_err());
        assert!(Invitation::parse("hello").is_err());
        assert!(Invitation::parse(&text[..text.len() - 10]).is_err());
        for n in 0..12 {
            let bytes: Vec<u8> = (0..n).map(|i: u32| (i * 37 % 256) as u8).collect();
            assert_eq!(base32_decode(&base32_encode(&bytes)).unwrap(), bytes);
        }
    }
}
