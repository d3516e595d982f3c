//! More of a process's life than [`crate::procs`] covers: a clean stop (SIGTERM, the node
//! drains and exits), a restart, and a node added to a running cluster on a data dir of
//! the caller's (e.g. a clone of another node's).

use std::path::PathBuf;
use std::process::Command;

use crate::procs::{Cluster, DEADLINE, Proc, free_port};
use crate::wait::POLL;

impl Proc {
    /// Stops the process with SIGTERM and waits until it has exited; panics when it has
    /// not exited after [`DEADLINE`] or exited with a failure.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {} failed", child.id());
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(status) = child.try_wait().expect("wait for murmur") {
                assert!(
                    status.success(),
                    "murmur exited with {status} after SIGTERM (see {})",
                    self.log.display()
                );
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "murmur did not exit within {DEADLINE:?} of SIGTERM (see {})",
                    self.log.display()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Cluster {
    /// Starts node `i` again on its data dir and waits until it answers.
    pub async fn restart(&mut self, i: usize) {
        self.procs[i].spawn();
        self.wait_healthy(i).await;
    }

    /// Starts one more node on the data dir `data` (new ports, the cluster's secret and
    /// token), dialing the libp2p ports `peers`; waits until it answers; returns its index.
    pub async fn add_node(&mut self, data: PathBuf, peers: Vec<u16>) -> usize {
        let i = self.procs.len();
        let first = &self.procs[0];
        let mut p = Proc {
            bin: first.bin.clone(),
            child: None,
            data,
            api: free_port(),
            p2p: free_port(),
            peers,
            secret: first.secret.clone(),
            log: self.dir.path().join(format!("n{i}.log")),
            args: Vec::new(),
            token_file: first.token_file.clone(),
        };
        p.spawn();
        self.procs.push(p);
        self.wait_healthy(i).await;
        i
    }
}
