//! Nodes in this process that share one library: a star, every node dialling the first (as
//! on a LAN with one hub), and waiting until an item has reached a number of them.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use murmur_node::Config;
use tempfile::TempDir;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::node::{TestNode, secret_file};

/// Nodes of one library, each with its own data dir.
pub struct Cluster {
    _secret_dir: TempDir,
    /// The library secret file.
    pub secret: PathBuf,
    /// The nodes; the first is the hub.
    pub nodes: Vec<TestNode>,
}

impl Cluster {
    /// `n` nodes with the test config; every other node dials the first.
    pub async fn start(n: usize) -> Cluster {
        Self::start_with(n, |_| {}).await
    }

    /// [`Cluster::start`] with each node's config changed by `tweak`.
    pub async fn start_with(n: usize, tweak: impl Fn(&mut Config)) -> Cluster {
        let (secret_dir, secret) = secret_file();
        let mut c = Cluster {
            _secret_dir: secret_dir,
            secret,
            nodes: Vec::with_capacity(n),
        };
        for _ in 0..n {
            c.nodes.push(TestNode::new_with(&c.secret, &tweak).await);
        }
        if let Some((hub, others)) = c.nodes.split_first() {
            for node in others {
                node.connect(hub).await;
            }
        }
        c
    }

    /// Stops every node.
    pub async fn shutdown(self) {
        for mut n in self.nodes {
            n.stop().await;
        }
    }
}

/// Waits until `want` distinct nodes sent `item` on `rx` (as `(node, item, when)`); returns
/// when the last of them received it, or `None` after `timeout`.
pub async fn wait_seen<T: PartialEq>(
    rx: &mut UnboundedReceiver<(usize, T, Instant)>,
    item: T,
    want: usize,
    timeout: std::time::Duration,
) -> Option<Instant> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen = HashSet::new();
    let mut last = None;
    while seen.len() < want {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((i, got, at))) if got == item => {
                if seen.insert(i) {
                    last = Some(at);
                }
            }
            Ok(Some(_)) => {}
            _ => return None,
        }
    }
    last
}
