//! mDNS discovery with the `murmur` binary: three `murmur run` processes, each in a network
//! namespace this test creates (veth pairs onto a bridge that lives in its own namespace,
//! so nothing appears on the host's interfaces), mDNS on and no configured peers. They must
//! find and connect to each other, and a write on one must reach the others.
//!
//! Needs root and `ip`; elsewhere it prints why and passes as skipped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as J;

const BIN: &str = env!("CARGO_BIN_EXE_murmur");
const NODES: usize = 3;
const DEADLINE: Duration = Duration::from_secs(60);

/// Namespaces and processes, removed on drop whatever happens.
struct Lab {
    namespaces: Vec<String>,
    children: Vec<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
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
        .map_err(|e| format!("ip: {e}"))?;
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

fn skip_reason() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0");
    if !root {
        return Some("not running as root".into());
    }
    if !Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some("no working `ip` binary".into());
    }
    if !Command::new("python3")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some("no python3 to talk HTTP inside the namespaces".into());
    }
    None
}

fn ns_name(i: usize) -> String {
    format!("mmdns-{}-{i}", std::process::id())
}

fn build(lab: &mut Lab) -> Result<(), String> {
    let br = format!("mmdns-{}-br", std::process::id());
    ip(&["netns", "add", &br])?;
    lab.namespaces.push(br.clone());
    ip(&[
        "-n",
        &br,
        "link",
        "add",
        "br0",
        "type",
        "bridge",
        "mcast_snooping",
        "0",
    ])?;
    ip(&["-n", &br, "link", "set", "br0", "up"])?;
    for i in 1..=NODES {
        let ns = ns_name(i);
        ip(&["netns", "add", &ns])?;
        lab.namespaces.push(ns.clone());
        let port = format!("p{i}");
        ip(&[
            "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns", &br,
        ])?;
        ip(&["-n", &br, "link", "set", &port, "master", "br0"])?;
        ip(&["-n", &br, "link", "set", &port, "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("10.214.0.{i}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "eth0"])?;
    }
    Ok(())
}

/// An HTTP call to the node inside namespace `i`, through python3 run in that namespace.
fn http(i: usize, method: &str, path: &str, body: Option<&str>) -> Option<J> {
    let script = r#"
import sys, urllib.request
req = urllib.request.Request("http://127.0.0.1:7700" + sys.argv[2], method=sys.argv[1],
                             data=sys.argv[3].encode() if len(sys.argv) > 3 else None,
                             headers={"content-type": "application/json"})
try:
    print(urllib.request.urlopen(req, timeout=5).read().decode())
except Exception as e:
    print("null")
"#;
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &ns_name(i),
        "python3",
        "-c",
        script,
        method,
        path,
    ]);
    if let Some(b) = body {
        cmd.arg(b);
    }
    let out = cmd.output().ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

fn wait(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn murmur_nodes_find_each_other_by_mdns() {
    if let Some(why) = skip_reason() {
        println!("SKIPPED murmur_nodes_find_each_other_by_mdns: {why}");
        return;
    }
    let mut lab = Lab {
        namespaces: Vec::new(),
        children: Vec::new(),
    };
    if let Err(e) = build(&mut lab) {
        println!("SKIPPED murmur_nodes_find_each_other_by_mdns: cannot create namespaces: {e}");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("library.key");
    let key: [u8; 32] = rand::random();
    std::fs::write(
        &secret,
        key.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    )
    .expect("secret");
    for i in 1..=NODES {
        let data = dir.path().join(format!("n{i}"));
        let log = std::fs::File::create(dir.path().join(format!("n{i}.log"))).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns_name(i), BIN, "run"])
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--api",
                "127.0.0.1:7700",
                "--listen",
                "/ip4/0.0.0.0/tcp/7000",
            ])
            .arg("--library-secret-file")
            .arg(&secret)
            .env("MURMUR_LOG", "info")
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn murmur in its namespace");
        lab.children.push(child);
    }
    let started = Instant::now();
    wait("every node connected to the two others by mDNS", || {
        (1..=NODES).all(|i| {
            http(i, "GET", "/v1/status", None).is_some_and(|st| {
                st["peers"].as_array().is_some_and(|p| {
                    p.iter().filter(|p| p["connected"] == J::Bool(true)).count() == NODES - 1
                })
            })
        })
    });
    println!(
        "mDNS: {NODES} nodes fully connected after {} ms",
        started.elapsed().as_millis()
    );
    let mut found_by_mdns = 0;
    for i in 1..=NODES {
        let st = http(i, "GET", "/v1/status", None).expect("status");
        for p in st["peers"].as_array().into_iter().flatten() {
            println!(
                "node {i}: peer {} found by {}",
                p["client_uuid"], p["discovery"]
            );
            if p["discovery"] == "mdns" {
                found_by_mdns += 1;
            }
        }
    }
    // One side of each pair dials (the other sees an inbound connection).
    assert!(
        found_by_mdns >= NODES,
        "connections must come from mDNS discovery"
    );
    let created = http(
        1,
        "POST",
        "/v1/shared/tags",
        Some(r#"{"name": "over mdns"}"#),
    )
    .expect("created");
    let uuid = created["uuid"].as_str().expect("uuid").to_owned();
    wait("the write reaches every node", || {
        (2..=NODES).all(|i| {
            http(i, "GET", &format!("/v1/shared/tags/{uuid}"), None)
                .is_some_and(|r| r["name"] == "over mdns")
        })
    });
}
