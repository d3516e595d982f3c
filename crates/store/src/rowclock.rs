//! The clock of a live shared row, stored beside its data in the row's `crdt_clock` column:
//! the existence register's timestamp and every property register's timestamp. With it, the
//! merge state of a live row is its data row alone, so an update reads and writes one row
//! (plus the op log) instead of a row in each of three tables.
//!
//! Deleted rows, and rows known only from updates that arrived before their create, keep
//! their registers (values included) in `crdt_rows` and `crdt_props` instead: a row's state
//! lives in exactly one of the two places.
//!
//! Format (version 1), bytewise:
//!
//! ```text
//! 0x01  exists_ts[24]  { name_len: u16 BE, name[name_len], tag: u8, [ts[24] if tag = 1] }*
//! ```
//!
//! Tag 0 means "the existence timestamp", which every property of a freshly created row
//! has, so a row that was never updated costs 25 bytes plus its column names. Properties
//! are keyed by name, so adding or reordering columns in the registry never misreads a
//! stored clock; a column missing from a clock has no register yet (older than anything).

use crate::clock::Hlc;
use crate::error::StoreError;

const VERSION: u8 = 1;
const SAME: u8 = 0;
const OWN: u8 = 1;

/// Encodes a live row's clock: its existence timestamp and `(property, timestamp)` pairs.
pub(crate) fn encode<'a>(exists: Hlc, props: impl Iterator<Item = (&'a str, Hlc)>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(VERSION);
    out.extend_from_slice(&exists.to_bytes());
    for (name, ts) in props {
        // Registry column names are checked to fit in a u16 when the store opens.
        let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&name.as_bytes()[..len as usize]);
        if ts == exists {
            out.push(SAME);
        } else {
            out.push(OWN);
            out.extend_from_slice(&ts.to_bytes());
        }
    }
    out
}

/// A decoded clock: the existence timestamp and each property's timestamp.
pub(crate) struct RowClock<'a> {
    pub exists: Hlc,
    pub props: Vec<(&'a str, Hlc)>,
}

/// Decodes a clock written by [`encode`].
pub(crate) fn decode(bytes: &[u8]) -> Result<RowClock<'_>, StoreError> {
    let bad = |why: &str| StoreError::Corrupt(format!("row clock: {why}"));
    let (&version, rest) = bytes.split_first().ok_or_else(|| bad("empty"))?;
    if version != VERSION {
        return Err(bad(&format!("unknown version {version}")));
    }
    let (ts, mut rest) = rest
        .split_at_checked(24)
        .ok_or_else(|| bad("truncated existence timestamp"))?;
    let exists = Hlc::from_bytes(ts)?;
    let mut props = Vec::new();
    while !rest.is_empty() {
        let (len, r) = rest
            .split_at_checked(2)
            .ok_or_else(|| bad("truncated name length"))?;
        let len = u16::from_be_bytes([len[0], len[1]]) as usize;
        let (name, r) = r
            .split_at_checked(len)
            .ok_or_else(|| bad("truncated name"))?;
        let name = std::str::from_utf8(name).map_err(|_| bad("name is not UTF-8"))?;
        let (&tag, r) = r.split_first().ok_or_else(|| bad("truncated tag"))?;
        let (ts, r) = match tag {
            SAME => (exists, r),
            OWN => {
                let (ts, r) = r
                    .split_at_checked(24)
                    .ok_or_else(|| bad("truncated timestamp"))?;
                (Hlc::from_bytes(ts)?, r)
            }
            other => return Err(bad(&format!("unknown tag {other}"))),
        };
        props.push((name, ts));
        rest = r;
    }
    Ok(RowClock { exists, props })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(time: u64, author: u128) -> Hlc {
        Hlc::at(time, author)
    }

    #[test]
    fn round_trip_and_compact_form() {
        let e = ts(10, 1);
        let bytes = encode(e, [("name", e), ("color", ts(11, 2))].into_iter());
        // 1 + 24 + (2 + 4 + 1) + (2 + 5 + 1 + 24)
        assert_eq!(bytes.len(), 64);
        let c = decode(&bytes).unwrap();
        assert_eq!(c.exists, e);
        assert_eq!(c.props, vec![("name", e), ("color", ts(11, 2))]);
        let empty = encode(e, std::iter::empty());
        assert!(decode(&empty).unwrap().props.is_empty());
    }

    #[test]
    fn corrupt_clocks_are_errors_not_panics() {
        let e = ts(10, 1);
        let good = encode(e, [("name", ts(12, 3))].into_iter());
        // Every cut but the one between the existence timestamp and the first property.
        for cut in (0..good.len()).filter(|c| *c != 25) {
            assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode(&good[..25]).unwrap().props.is_empty());
        let mut bad = good.clone();
        bad[0] = 9;
        assert!(decode(&bad).is_err());
        let mut bad = good.clone();
        bad[25 + 2 + 4] = 7;
        assert!(decode(&bad).is_err());
        let mut bad = good;
        bad[25 + 2] = 0xff;
        assert!(decode(&bad).is_err());
    }
}
