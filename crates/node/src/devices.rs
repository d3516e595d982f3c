//! The library's devices as `murmur devices` and `/v1/devices` show them, and what a member
//! does to them: invite one (`murmur invite`, `POST /v1/invites`) and remove one
//! (`murmur devices remove`, `DELETE /v1/devices/{client}`). The membership itself is the
//! store's ([`murmur_store::members`]); this module joins it with the client pool (last
//! seen, last synchronized), the connected peers and the devices refused.

use std::time::Duration;

use chrono::{DateTime, Utc};
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use murmur_store::members::{Event, Standing};
use murmur_store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::identity::LibrarySecret;
use crate::invite::Invitation;
use crate::protocol::Net;
use crate::sync::PeerTable;

/// The document of `GET /v1/devices`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Devices {
    /// Whether this node enforces membership (it knows the library's founder). A library
    /// made before membership existed does not: every holder of the secret is a member,
    /// and only removals are enforced.
    pub enforced: bool,
    /// The founder's client UUID (the trust root), if known.
    pub founder: Option<Uuid>,
    /// Every device: members, removed devices, and devices refused.
    pub devices: Vec<DeviceRow>,
    /// Invitations made and not used yet.
    pub invitations: Vec<InvitationRow>,
}

/// One device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRow {
    /// Its name ("" when unknown).
    pub name: String,
    /// Its client UUID.
    pub client: Uuid,
    /// Its peer id (its connection's, else the last seen).
    pub peer_id: Option<String>,
    /// Whether this is the device answering.
    pub this_device: bool,
    /// "member", "removed", "refused" (holds the secret, never admitted) or "unknown"
    /// (named by an event only).
    pub state: String,
    /// The client that admitted it (none: the founder, or a library without one).
    pub admitted_by: Option<Uuid>,
    /// When it was admitted.
    pub admitted_at: Option<DateTime<Utc>>,
    /// The client that removed it.
    pub removed_by: Option<Uuid>,
    /// When it was removed.
    pub removed_at: Option<DateTime<Utc>>,
    /// Whether its owned rows were deleted everywhere.
    pub forget_data: bool,
    /// When any message from it last arrived.
    pub last_seen: Option<DateTime<Utc>>,
    /// When a catch-up with it last completed.
    pub last_synchronized: Option<DateTime<Utc>>,
    /// Whether it is connected now.
    pub connected: bool,
    /// Why this node refuses it, when it does.
    pub refused: Option<String>,
}

/// An invitation not used yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvitationRow {
    /// Its id.
    pub id: Uuid,
    /// The name it was made for, if named in advance.
    pub name: Option<String>,
    /// Who made it.
    pub by: Uuid,
    /// When it expires (none: never, for a device named in advance).
    pub expires: Option<DateTime<Utc>>,
}

/// What `POST /v1/invites` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InviteDoc {
    /// The invitation, to give to the new device (`murmur run --join <it>`).
    pub invitation: String,
    /// Its id.
    pub id: Uuid,
    /// When it expires.
    pub expires: DateTime<Utc>,
}

/// Why a remove was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// No device of that name or client.
    #[error("no device named {0}")]
    Unknown(String),
    /// The device asked to remove itself.
    #[error("this is the device answering: remove it from another member")]
    ThisDevice,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Builds the devices document and makes invitations and removals.
pub struct DevicesSource {
    /// The store.
    pub store: Store,
    /// The network (listen addresses, for invitations).
    pub net: Net,
    /// The connected peers and the devices refused.
    pub peers: PeerTable,
    /// The library secret (invitations carry it).
    pub secret: LibrarySecret,
}

/// NTP64 (seconds in the high 32 bits) as a time.
pub fn ntp_to_time(ntp: u64) -> Option<DateTime<Utc>> {
    let secs = (ntp >> 32) as i64;
    let nanos = (((ntp & 0xffff_ffff) as u128 * 1_000_000_000) >> 32) as u32;
    DateTime::from_timestamp(secs, nanos)
}

/// A time as NTP64.
pub fn time_to_ntp(t: DateTime<Utc>) -> u64 {
    let secs = t.timestamp().max(0) as u64;
    let frac = ((u64::from(t.timestamp_subsec_nanos())) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

impl DevicesSource {
    /// The devices document.
    pub async fn list(&self) -> Result<Devices, StoreError> {
        let m = self.store.members();
        let pool = self.store.clients().await?;
        let connected = self.peers.snapshot();
        let me = self.store.client();
        let mut rows: Vec<DeviceRow> = Vec::new();
        let row = |client: Uuid| DeviceRow {
            name: String::new(),
            client,
            peer_id: None,
            this_device: client == me,
            state: "unknown".into(),
            admitted_by: None,
            admitted_at: None,
            removed_by: None,
            removed_at: None,
            forget_data: false,
            last_seen: None,
            last_synchronized: None,
            connected: false,
            refused: None,
        };
        for d in m.devices.values() {
            let mut r = row(d.client);
            r.name = d.name.clone();
            r.state = match m.standing(&d.client) {
                Standing::Member => "member",
                Standing::Removed(_) => "removed",
                Standing::NotMember => "unknown",
            }
            .into();
            r.admitted_by = d.admitted_by;
            r.admitted_at = (d.admitted && d.admitted_at > 0)
                .then(|| ntp_to_time(d.admitted_at))
                .flatten();
            if let Some(rm) = d.removed {
                r.removed_by = Some(rm.by);
                r.removed_at = ntp_to_time(rm.at);
                r.forget_data = rm.forget_data;
            }
            rows.push(r);
        }
        // Without a founder, every device of the pool is a member.
        for c in &pool {
            if !rows.iter().any(|r| r.client == c.client_uuid) {
                let mut r = row(c.client_uuid);
                r.state = match m.standing(&c.client_uuid) {
                    Standing::Member => "member",
                    Standing::Removed(_) => "removed",
                    Standing::NotMember => "refused",
                }
                .into();
                rows.push(r);
            }
        }
        for refused in self.peers.refused_devices() {
            if !rows.iter().any(|r| r.client == refused.client) {
                let mut r = row(refused.client);
                r.state = "refused".into();
                rows.push(r);
            }
        }
        let refused = self.peers.refused_devices();
        for r in rows.iter_mut() {
            if let Some(c) = pool.iter().find(|c| c.client_uuid == r.client) {
                r.last_seen = c.last_seen;
                r.last_synchronized = c.last_synchronized;
                r.peer_id = c.peer_id.clone();
            }
            // The last run refused is the one to name.
            if let Some(x) = refused.iter().find(|x| x.client == r.client) {
                r.refused = Some(x.reason.to_string());
                r.peer_id = Some(x.peer_id.to_string());
                let at = DateTime::from_timestamp_millis(x.at_ms);
                r.last_seen = r.last_seen.max(at);
            }
            if let Some(p) = connected.iter().find(|p| p.client_uuid == Some(r.client)) {
                r.connected = true;
                r.peer_id = Some(p.peer_id.to_string());
            }
            if r.this_device {
                r.peer_id = Some(self.net.local_peer_id().to_string());
            }
        }
        rows.sort_by(|a, b| (&a.name, a.client).cmp(&(&b.name, b.client)));
        let invitations = m
            .invites
            .values()
            .filter(|i| i.used_by.is_none())
            .map(|i| InvitationRow {
                id: i.id,
                name: i.name.clone(),
                by: i.by,
                expires: (i.expires != u64::MAX)
                    .then(|| ntp_to_time(i.expires))
                    .flatten(),
            })
            .collect();
        Ok(Devices {
            enforced: m.enforced(),
            founder: m.root.and_then(|k| murmur_store::members::client_of(&k)),
            devices: rows,
            invitations,
        })
    }

    /// Makes an invitation valid for `valid_for`: records the `Invite` event (here first,
    /// so the new device dials this node first) and returns its text.
    pub async fn invite(&self, valid_for: Duration) -> Result<(Invitation, InviteDoc), StoreError> {
        let expires_at = Utc::now()
            + chrono::Duration::from_std(valid_for).unwrap_or(chrono::Duration::hours(1));
        let expires = time_to_ntp(expires_at);
        let addrs = invitation_addrs(self.net.listen_addrs().await.unwrap_or_default());
        let inv = Invitation::generate(self.secret.clone(), addrs, expires);
        self.store
            .record_member_event(Event::Invite {
                id: inv.id,
                key: murmur_store::proof::Hash(inv.keypair().public().to_bytes()),
                expires,
                name: None,
            })
            .await?;
        let doc = InviteDoc {
            invitation: inv.to_text(),
            id: inv.id,
            expires: expires_at,
        };
        Ok((inv, doc))
    }

    /// Removes the device of that name or client UUID.
    pub async fn remove(&self, device: &str, forget_data: bool) -> Result<Uuid, DeviceError> {
        let m = self.store.members();
        let (client, key) = match m.find(device) {
            Some(d) => (d.client, d.key),
            None => return Err(DeviceError::Unknown(device.to_owned())),
        };
        if client == self.store.client() {
            return Err(DeviceError::ThisDevice);
        }
        self.store
            .record_member_event(Event::Remove {
                device: key,
                forget_data,
            })
            .await?;
        tracing::info!(%client, forget_data, "removed a device");
        Ok(client)
    }
}

/// The addresses an invitation carries: the listen addresses, unspecified ones left out,
/// non-loopback ones first.
fn invitation_addrs(mut addrs: Vec<Multiaddr>) -> Vec<Multiaddr> {
    let loopback = |a: &Multiaddr| {
        a.iter().any(|p| match p {
            Protocol::Ip4(ip) => ip.is_loopback(),
            Protocol::Ip6(ip) => ip.is_loopback(),
            _ => false,
        })
    };
    addrs.retain(|a| {
        !a.iter().any(|p| match p {
            Protocol::Ip4(ip) => ip.is_unspecified(),
            Protocol::Ip6(ip) => ip.is_unspecified(),
            _ => false,
        })
    });
    addrs.sort_by_key(loopback);
    addrs.truncate(crate::invite::ADDRS_CAP);
    addrs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntp_times_round_trip() {
        let t = DateTime::from_timestamp_millis(1_790_000_000_123).unwrap();
        let back = ntp_to_time(time_to_ntp(t)).unwrap();
        assert!((back - t).num_milliseconds().abs() <= 1);
    }
}
