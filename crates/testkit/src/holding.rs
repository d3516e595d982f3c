//! What a process node holds, read over its API (its digest, its version vector, the names
//! of its tags and file_paths), and a wait for every node to hold every acknowledged write
//! whose failure says which node lacks which rows.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde_json::Value as J;

use crate::procs::{Cluster, DEADLINE};
use crate::wait::POLL;

/// Rows every node must hold, by name.
#[derive(Debug, Clone, Default)]
pub struct Want {
    /// Names of tags.
    pub tags: BTreeSet<String>,
    /// Names of file_paths (owned rows).
    pub file_paths: BTreeSet<String>,
}

/// What one node holds.
#[derive(Debug, Clone)]
pub struct Holding {
    /// Its `/v1/digest` (null when it does not answer).
    pub digest: J,
    /// Its version vector, from `/v1/status`.
    pub version_vector: J,
    /// How many peers it is connected to.
    pub connected: usize,
    /// The names of its live tags.
    pub tags: BTreeSet<String>,
    /// The names of its live file_paths.
    pub file_paths: BTreeSet<String>,
}

impl Holding {
    /// What of `want` it lacks, in words; empty when it lacks nothing.
    pub fn lacks(&self, want: &Want) -> String {
        let mut out = String::new();
        for (what, wanted, held) in [
            ("tags", &want.tags, &self.tags),
            ("file_paths", &want.file_paths, &self.file_paths),
        ] {
            let missing: Vec<&String> = wanted.difference(held).collect();
            if !missing.is_empty() {
                let _ = write!(out, " lacks {} {what} {missing:?};", missing.len());
            }
        }
        out
    }
}

impl Cluster {
    /// The `name` of every live row listed at `path` on node `i` (`/v1/shared/tags` or
    /// `/v1/owned/file_paths`), following the cursor; `None` when the node does not answer.
    pub async fn names(&self, i: usize, path: &str) -> Option<BTreeSet<String>> {
        let mut names = BTreeSet::new();
        let mut after: Option<String> = None;
        loop {
            let page = match &after {
                Some(a) => format!("{path}?limit=5000&after={a}"),
                None => format!("{path}?limit=5000"),
            };
            let (status, body) = self.get(i, &page).await;
            if status != 200 {
                return None;
            }
            for row in body["rows"].as_array()? {
                names.insert(row["name"].as_str().unwrap_or_default().to_owned());
            }
            match body["next"].as_str() {
                Some(n) => after = Some(n.to_owned()),
                None => return Some(names),
            }
        }
    }

    /// What node `i` holds now.
    pub async fn holding(&self, i: usize) -> Holding {
        let (_, status) = self.get(i, "/v1/status").await;
        Holding {
            digest: self.get(i, "/v1/digest").await.1["digest"].clone(),
            version_vector: status["version_vector"].clone(),
            connected: self.connected(i).await,
            tags: self.names(i, "/v1/shared/tags").await.unwrap_or_default(),
            file_paths: self
                .names(i, "/v1/owned/file_paths")
                .await
                .unwrap_or_default(),
        }
    }

    /// Waits until the nodes `nodes` (a label and an index each) answer one digest and each
    /// holds every row of `want`. After [`DEADLINE`] it panics with, for each node, its
    /// digest, version vector, peers, row counts and the rows it lacks.
    pub async fn converge_holding(&self, nodes: &[(&str, usize)], want: &Want) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let mut held = Vec::new();
            for &(_, i) in nodes {
                held.push(self.holding(i).await);
            }
            let one_digest =
                held[0].digest != J::Null && held.windows(2).all(|w| w[0].digest == w[1].digest);
            if one_digest && held.iter().all(|h| h.lacks(want).is_empty()) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let mut report = format!(
                    "after {DEADLINE:?} the nodes have not converged on every acknowledged \
                     write ({} tags, {} file_paths wanted on each; digests {}):",
                    want.tags.len(),
                    want.file_paths.len(),
                    if one_digest { "equal" } else { "differ" },
                );
                for ((label, _), h) in nodes.iter().zip(&held) {
                    let _ = write!(
                        report,
                        "\n  {label}: digest {}, version vector {}, {} peer(s) connected, \
                         {} tags, {} file_paths;{}",
                        h.digest,
                        h.version_vector,
                        h.connected,
                        h.tags.len(),
                        h.file_paths.len(),
                        h.lacks(want)
                    );
                }
                panic!("{report}");
            }
            tokio::time::sleep(POLL * 8).await;
        }
    }
}
