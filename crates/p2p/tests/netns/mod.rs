//! A small lab of network namespaces for mDNS tests: one namespace holding a bridge, and
//! `n` host namespaces joined to it by veth pairs. Each veth pair is born inside a host
//! namespace with its other end moved into the bridge namespace, so no interface ever
//! appears on the machine's real network and mDNS stays inside the lab.
//!
//! Shared by `murmur-p2p`'s mDNS test and the root package's mDNS test of the binary
//! (included there with `#[path]`). Everything is removed on drop, whatever happened.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};

/// Namespaces and the processes running in them.
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    /// Processes to kill on drop.
    pub children: Vec<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Why the lab cannot be built here, if it cannot (not root, no `ip`).
pub fn skip_reason() -> Option<String> {
    if !is_root() {
        return Some("not running as root".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => None,
        Ok(_) | Err(_) => Some("no working `ip` binary".into()),
    }
}

impl Lab {
    /// Builds the lab: namespaces `<prefix>-<pid>-1..=n` with addresses `<subnet>.1..=n/24`
    /// (e.g. subnet "10.213.0"), multicast routed to their veth.
    pub fn build(prefix: &str, n: usize, subnet: &str) -> Result<Lab, String> {
        let prefix = format!("{prefix}-{}", std::process::id());
        let mut lab = Lab {
            prefix: prefix.clone(),
            namespaces: Vec::new(),
            children: Vec::new(),
        };
        let bridge_ns = format!("{prefix}-br");
        ip(&["netns", "add", &bridge_ns])?;
        lab.namespaces.push(bridge_ns.clone());
        ip(&["-n", &bridge_ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &bridge_ns,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        ip(&["-n", &bridge_ns, "link", "set", "br0", "up"])?;
        for i in 1..=n {
            let ns = lab.namespace(i);
            ip(&["netns", "add", &ns])?;
            lab.namespaces.push(ns.clone());
            let port = format!("p{i}");
            ip(&[
                "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns",
                &bridge_ns,
            ])?;
            ip(&["-n", &bridge_ns, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &bridge_ns, "link", "set", &port, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{subnet}.{i}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "eth0"])?;
        }
        Ok(lab)
    }

    /// The name of host namespace `i` (from 1).
    pub fn namespace(&self, i: usize) -> String {
        format!("{}-{i}", self.prefix)
    }

    /// A command that runs `program` inside host namespace `i`.
    pub fn command(&self, i: usize, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.namespace(i), program]);
        cmd
    }
}
