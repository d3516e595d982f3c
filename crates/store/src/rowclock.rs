//! The clock of a live shared row, stored beside its data in the row's `crdt_clock` column:
//! the existence register's timestamp and every property register's timestamp. With it, the
//! merge state of a live row is its data row alone, so an update reads and writes one row
//! (plus the op log) instead of a row in each of three tables.
//!
//! Deleted rows, and rows known only from updates that arrived before their create, keep
//! their registers (values included) in `crdt_rows` and `crdt_props` instead: a row's state
//! lives in exactly one of the two places.
//!
//! Format (version 2, written since the remote-update fast path), bytewise:
//!
//! ```text
//! 0x02  ncols: u16 BE  { name_len: u16 BE, name[name_len] }*ncols  exists_ts[24]  [slot[24]*ncols]
//! ```
//!
//! The names are the resource's columns in registry order, and slot `i` is the timestamp of
//! column `i`'s register: 24 bytes of `0xff` mean "the existence timestamp" (every property
//! of a freshly created row has it), 24 zero bytes mean "no register yet" (older than
//! anything), anything else is the register's own timestamp. A clock without slots (the
//! compact form) means every column's register is at the existence timestamp: that is
//! every row as its create left it, stored in as few bytes as version 1 took. The version and the names
//! are the same bytes for every row of a resource, and every timestamp is at a fixed offset
//! from them, so SQLite can check a clock's layout with one comparison and read and replace
//! one register with `substr` (see [`crate::engine`]'s in-place update). The names keep the
//! clock self-describing: a clock is decoded by name, so adding or reordering columns in
//! the registry never misreads it (the fast path only touches clocks whose names match the
//! registry exactly).
//!
//! Version 1, still read (rows written by earlier versions; rewritten as version 2 when
//! their row is next written):
//!
//! ```text
//! 0x01  exists_ts[24]  { name_len: u16 BE, name[name_len], tag: u8, [ts[24] if tag = 1] }*
//! ```

use crate::clock::Hlc;
use crate::error::StoreError;

const V1: u8 = 1;
const V2: u8 = 2;
/// The version [`encode`] writes.
pub(crate) const VERSION: u8 = V2;
/// v1 tags.
const SAME: u8 = 0;
const OWN: u8 = 1;
/// Bytes of a timestamp.
pub(crate) const TS: usize = 24;
/// v2 slot values.
pub(crate) const SLOT_SAME: [u8; TS] = [0xff; TS];
const SLOT_NONE: [u8; TS] = [0; TS];

/// Where a v2 clock of a resource keeps its parts, 0-based: the same for every row while
/// the resource's columns are unchanged.
pub(crate) struct Offsets {
    /// The version byte and the names: `prefix` bytes, compared as a whole.
    pub prefix: usize,
    /// The existence timestamp (right after the prefix).
    pub exists: usize,
    /// Column `i`'s slot is at `slots + i * TS`; also the length of the compact form.
    pub slots: usize,
    /// The length of the form with slots.
    pub len: usize,
}

/// The offsets of a clock with this [`layout`] of `ncols` columns.
pub(crate) fn offsets(layout: &[u8], ncols: usize) -> Offsets {
    let prefix = 1 + layout.len();
    Offsets {
        prefix,
        exists: prefix,
        slots: prefix + TS,
        len: prefix + TS + ncols * TS,
    }
}

/// The names part of a v2 clock for these columns (`ncols`, then each name): the same
/// bytes for every row of a resource while its registry entry is unchanged.
pub(crate) fn layout<'a>(columns: impl ExactSizeIterator<Item = &'a str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + columns.len() * 8);
    // The store refuses column names over u16::MAX bytes when it opens.
    let n = u16::try_from(columns.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&n.to_be_bytes());
    for name in columns.take(n as usize) {
        let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&name.as_bytes()[..len as usize]);
    }
    out
}

/// The least byte string greater than every string that starts with `prefix` (its last
/// byte below 0xff incremented, the bytes after it dropped); `None` when every byte is 0xff.
pub(crate) fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|b| *b != 0xff)?;
    let mut upper = prefix[..=last].to_vec();
    upper[last] += 1;
    Some(upper)
}

/// Encodes a live row's clock: its existence timestamp and, for each of the resource's
/// columns in registry order, the timestamp of its register if it has one. `layout` is
/// [`layout`] of the same columns.
pub(crate) fn encode(
    exists: Hlc,
    layout: &[u8],
    registers: impl ExactSizeIterator<Item = Option<Hlc>> + Clone,
) -> Vec<u8> {
    let compact = registers.clone().all(|ts| ts == Some(exists));
    let slots = if compact { 0 } else { registers.len() };
    let mut out = Vec::with_capacity(1 + layout.len() + TS * (1 + slots));
    out.push(V2);
    out.extend_from_slice(layout);
    out.extend_from_slice(&exists.to_bytes());
    if compact {
        return out;
    }
    for ts in registers {
        match ts {
            None => out.extend_from_slice(&SLOT_NONE),
            Some(ts) if ts == exists => out.extend_from_slice(&SLOT_SAME),
            Some(ts) => out.extend_from_slice(&ts.to_bytes()),
        }
    }
    out
}

/// A decoded clock: the existence timestamp and each property's timestamp.
pub(crate) struct RowClock<'a> {
    pub exists: Hlc,
    pub props: Vec<(&'a str, Hlc)>,
}

fn bad(why: &str) -> StoreError {
    StoreError::Corrupt(format!("row clock: {why}"))
}

/// Decodes a clock written by [`encode`] (or by version 1).
pub(crate) fn decode(bytes: &[u8]) -> Result<RowClock<'_>, StoreError> {
    let (&version, rest) = bytes.split_first().ok_or_else(|| bad("empty"))?;
    match version {
        V1 => decode_v1(rest),
        V2 => decode_v2(rest),
        other => Err(bad(&format!("unknown version {other}"))),
    }
}

fn exists_ts(rest: &[u8]) -> Result<(Hlc, &[u8]), StoreError> {
    let (ts, rest) = rest
        .split_at_checked(TS)
        .ok_or_else(|| bad("truncated existence timestamp"))?;
    Ok((Hlc::from_bytes(ts)?, rest))
}

/// A u16 length, then that many bytes of UTF-8.
fn name(rest: &[u8]) -> Result<(&str, &[u8]), StoreError> {
    let (len, r) = rest
        .split_at_checked(2)
        .ok_or_else(|| bad("truncated name length"))?;
    let len = u16::from_be_bytes([len[0], len[1]]) as usize;
    let (name, r) = r
        .split_at_checked(len)
        .ok_or_else(|| bad("truncated name"))?;
    let name = std::str::from_utf8(name).map_err(|_| bad("name is not UTF-8"))?;
    Ok((name, r))
}

fn decode_v2(rest: &[u8]) -> Result<RowClock<'_>, StoreError> {
    let (n, mut rest) = rest
        .split_at_checked(2)
        .ok_or_else(|| bad("truncated column count"))?;
    let n = u16::from_be_bytes([n[0], n[1]]) as usize;
    // Each name takes at least its 2-byte length: bound the count before allocating.
    if n > rest.len() / 2 {
        return Err(bad("column count larger than the clock"));
    }
    let mut names = Vec::with_capacity(n);
    for _ in 0..n {
        let (nm, r) = name(rest)?;
        names.push(nm);
        rest = r;
    }
    let (exists, rest) = exists_ts(rest)?;
    if rest.is_empty() {
        // The compact form: every register at the existence timestamp.
        return Ok(RowClock {
            exists,
            props: names.into_iter().map(|nm| (nm, exists)).collect(),
        });
    }
    if rest.len() != n * TS {
        return Err(bad(&format!(
            "{} bytes of slots for {n} columns",
            rest.len()
        )));
    }
    let mut props = Vec::with_capacity(n);
    for (nm, slot) in names.into_iter().zip(rest.chunks_exact(TS)) {
        if slot == SLOT_NONE {
            continue;
        }
        let ts = if slot == SLOT_SAME {
            exists
        } else {
            Hlc::from_bytes(slot)?
        };
        props.push((nm, ts));
    }
    Ok(RowClock { exists, props })
}

fn decode_v1(rest: &[u8]) -> Result<RowClock<'_>, StoreError> {
    let (exists, mut rest) = exists_ts(rest)?;
    let mut props = Vec::new();
    while !rest.is_empty() {
        let (nm, r) = name(rest)?;
        let (&tag, r) = r.split_first().ok_or_else(|| bad("truncated tag"))?;
        let (ts, r) = match tag {
            SAME => (exists, r),
            OWN => {
                let (ts, r) = r
                    .split_at_checked(TS)
                    .ok_or_else(|| bad("truncated timestamp"))?;
                (Hlc::from_bytes(ts)?, r)
            }
            other => return Err(bad(&format!("unknown tag {other}"))),
        };
        props.push((nm, ts));
        rest = r;
    }
    Ok(RowClock { exists, props })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_successor_of_a_prefix_bounds_exactly_the_strings_that_start_with_it() {
        assert_eq!(successor(&[1, 2, 3]), Some(vec![1, 2, 4]));
        assert_eq!(successor(&[1, 0xff, 0xff]), Some(vec![2]));
        assert_eq!(successor(&[0xff, 0xff]), None);
        let prefix = [2u8, 0, 2, 0, 4, b'n', b'a', b'm', b'e'];
        let upper = successor(&prefix).unwrap_or_default();
        let mut starts = prefix.to_vec();
        starts.extend_from_slice(&[0xff; 30]);
        let mut other = prefix.to_vec();
        *other.last_mut().unwrap_or(&mut 0) += 1;
        for (s, inside) in [
            (prefix.to_vec(), true),
            (starts, true),
            (prefix[..8].to_vec(), false),
            (other, false),
            (vec![2, 0, 2, 0, 4, b'n', b'a', b'm', b'd', 0xff], false),
        ] {
            let between = s.as_slice() >= &prefix[..] && s < upper;
            assert_eq!(between, inside, "{s:?}");
            assert_eq!(s.starts_with(&prefix), inside, "{s:?}");
        }
    }

    fn ts(time: u64, author: u128) -> Hlc {
        Hlc::at(time, author)
    }

    /// A version 1 clock, as earlier versions wrote it.
    fn encode_v1(exists: Hlc, props: &[(&str, Hlc)]) -> Vec<u8> {
        let mut out = vec![V1];
        out.extend_from_slice(&exists.to_bytes());
        for (name, ts) in props {
            out.extend_from_slice(&(name.len() as u16).to_be_bytes());
            out.extend_from_slice(name.as_bytes());
            if *ts == exists {
                out.push(SAME);
            } else {
                out.push(OWN);
                out.extend_from_slice(&ts.to_bytes());
            }
        }
        out
    }

    #[test]
    fn round_trip_with_fixed_slots() {
        let e = ts(10, 1);
        let cols = ["name", "color", "added_later"];
        let lay = layout(cols.into_iter());
        let bytes = encode(e, &lay, [Some(e), Some(ts(11, 2)), None].into_iter());
        // 1 + 24 + (2 + (2 + 4) + (2 + 5) + (2 + 11)) + 3 * 24
        assert_eq!(bytes.len(), 25 + 28 + 72);
        let at = offsets(&lay, cols.len());
        assert_eq!(at.len, bytes.len());
        assert_eq!(&bytes[1..at.prefix], &lay[..]);
        assert_eq!(&bytes[at.exists..][..TS], e.to_bytes());
        let slot = |i: usize| &bytes[at.slots + i * TS..][..TS];
        assert_eq!(slot(0), SLOT_SAME);
        assert_eq!(slot(1), ts(11, 2).to_bytes());
        assert_eq!(slot(2), SLOT_NONE);
        let c = decode(&bytes).unwrap();
        assert_eq!(c.exists, e);
        assert_eq!(c.props, vec![("name", e), ("color", ts(11, 2))]);
        let empty = encode(e, &layout(std::iter::empty()), std::iter::empty());
        assert!(decode(&empty).unwrap().props.is_empty());
    }

    #[test]
    fn a_row_as_created_has_the_compact_form() {
        let e = ts(10, 1);
        let cols = ["name", "color"];
        let lay = layout(cols.into_iter());
        let at = offsets(&lay, cols.len());
        let bytes = encode(e, &lay, [Some(e), Some(e)].into_iter());
        // 1 + (2 + (2 + 4) + (2 + 5)) + 24: the size of a version 1 clock of a new row.
        assert_eq!(bytes.len(), at.slots);
        assert_eq!(bytes.len(), 40);
        let c = decode(&bytes).unwrap();
        assert_eq!(c.exists, e);
        assert_eq!(c.props, vec![("name", e), ("color", e)]);
        // One register moved: every slot is written.
        let bytes = encode(e, &lay, [Some(e), Some(ts(11, 1))].into_iter());
        assert_eq!(bytes.len(), at.len);
    }

    #[test]
    fn version_1_clocks_are_still_read() {
        let e = ts(10, 1);
        let v1 = encode_v1(e, &[("name", e), ("color", ts(11, 2))]);
        // 1 + 24 + (2 + 4 + 1) + (2 + 5 + 1 + 24)
        assert_eq!(v1.len(), 64);
        let c = decode(&v1).unwrap();
        assert_eq!(c.exists, e);
        assert_eq!(c.props, vec![("name", e), ("color", ts(11, 2))]);
        // Every cut but those between entries (after the existence timestamp, after "name").
        for cut in (0..v1.len()).filter(|c| ![25, 32].contains(c)) {
            assert!(decode(&v1[..cut]).is_err(), "v1 cut at {cut}");
        }
        let mut bad = v1.clone();
        bad[25 + 2 + 4] = 7;
        assert!(decode(&bad).is_err(), "unknown tag");
    }

    #[test]
    fn corrupt_clocks_are_errors_not_panics() {
        let e = ts(10, 1);
        let lay = layout(["name", "color"].into_iter());
        let good = encode(e, &lay, [Some(ts(12, 3)), None].into_iter());
        let at = offsets(&lay, 2);
        // Every cut but the compact form's length.
        for cut in (0..good.len()).filter(|c| *c != at.slots) {
            assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(decode(&longer).is_err(), "a byte too many");
        let mut bad = good.clone();
        bad[0] = 9;
        assert!(decode(&bad).is_err(), "unknown version");
        let mut bad = good.clone();
        bad[1..3].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(decode(&bad).is_err(), "a column count past the end");
        let mut bad = good;
        bad[3..5].copy_from_slice(&0xfff0u16.to_be_bytes());
        assert!(decode(&bad).is_err(), "a name length past the end");
    }
}
