//! What a version announcement carries. A vector of at most [`VERSIONS_SEND_CAP`] authors
//! travels whole; a larger one in parts: first the authors whose seq moved since they were
//! last announced (up to half the message), then a window that goes round the others in
//! UUID order. Receivers merge what they hear (per author the highest seq), so every author
//! reaches them every few periods, and a message stays small whatever the library's age.
//! No I/O: the sync loop calls [`Announcer::next`] with its vector.

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Unbounded};

use uuid::Uuid;

/// The most authors one announcement lists (well under what receivers accept,
/// [`super::VERSIONS_AUTHORS_CAP`], and the gossip size caps).
pub const VERSIONS_SEND_CAP: usize = 1024;

/// What has been announced, to choose the next part.
#[derive(Debug, Default)]
pub(crate) struct Announcer {
    /// Per author, the seq last announced.
    sent: BTreeMap<Uuid, u64>,
    /// The last author of the previous window.
    cursor: Option<Uuid>,
}

impl Announcer {
    /// The part of `vector` (author -> contiguous seq) the next announcement carries, at
    /// most `cap` authors, and, when it is a part, how many authors the whole vector has.
    pub(crate) fn next(
        &mut self,
        vector: &BTreeMap<Uuid, u64>,
        cap: usize,
    ) -> (BTreeMap<Uuid, u64>, Option<u64>) {
        if vector.len() <= cap {
            self.sent.clear();
            self.cursor = None;
            return (vector.clone(), None);
        }
        let cap = cap.max(2);
        let mut part = BTreeMap::new();
        for (a, s) in vector {
            if part.len() >= cap / 2 {
                break;
            }
            if self.sent.get(a) != Some(s) {
                part.insert(*a, *s);
            }
        }
        let window: Box<dyn Iterator<Item = (&Uuid, &u64)>> = match self.cursor {
            Some(c) => Box::new(
                vector
                    .range((Excluded(c), Unbounded))
                    .chain(vector.range(..=c)),
            ),
            None => Box::new(vector.iter()),
        };
        for (a, s) in window {
            if part.len() >= cap {
                break;
            }
            part.insert(*a, *s);
            self.cursor = Some(*a);
        }
        for (a, s) in &part {
            self.sent.insert(*a, *s);
        }
        (part, Some(vector.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_vector_goes_round_in_bounded_parts_and_moved_authors_go_first() {
        let mut vv: BTreeMap<Uuid, u64> =
            (0..10_000u128).map(|i| (Uuid::from_u128(i), 1)).collect();
        let mut a = Announcer::default();
        let mut heard: BTreeMap<Uuid, u64> = BTreeMap::new();
        let mut rounds = 0;
        while heard != vv {
            let (part, total) = a.next(&vv, 1024);
            assert!(part.len() <= 1024);
            assert_eq!(total, Some(10_000));
            for (k, s) in part {
                let h = heard.entry(k).or_default();
                *h = (*h).max(s);
            }
            rounds += 1;
            assert!(
                rounds <= 20,
                "every author is announced within a few rounds"
            );
        }
        // A part encodes well under the gossip caps (the horizon adds as much again at most).
        let (part, _) = a.next(&vv, VERSIONS_SEND_CAP);
        let bytes = murmur_store::wire::to_cbor(&part).len();
        assert!(bytes * 2 < crate::protocol::GOSSIP_BYTES_CAP, "{bytes}");
        // An author that moves is in the very next part.
        let moved = Uuid::from_u128(4_321);
        vv.insert(moved, 7);
        let (part, _) = a.next(&vv, 1024);
        assert_eq!(part.get(&moved), Some(&7));
        // A small vector travels whole.
        let small: BTreeMap<Uuid, u64> = vv.iter().take(3).map(|(k, v)| (*k, *v)).collect();
        assert_eq!(a.next(&small, 1024), (small.clone(), None));
    }
}
