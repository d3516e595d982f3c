//! Helpers for the swarm integration tests: nodes in one process on loopback, mDNS off,
//! explicit connections, and waiting on conditions with deadlines (never fixed sleeps).
#![allow(dead_code)]

pub mod procs;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use murmur::node::{Config, Node};
use serde_json::{Value as J, json};
use tempfile::TempDir;

/// A node and its data dir.
pub struct TestNode {
    pub node: Option<Node>,
    pub dir: TempDir,
    pub secret: PathBuf,
    pub api: String,
    pub http: reqwest::Client,
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MURMUR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Writes a secret or token file readable by its owner only (the node refuses others).
pub fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write private file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}

/// 64 random hexadecimal characters (a library secret or an API token).
pub fn random_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An HTTP client that sends `Authorization: Bearer <token>` with every request (the one
/// place the tests add the API token).
pub fn client_with_token(token: &str) -> reqwest::ClientBuilder {
    let mut auth = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
        .expect("a token is a header value");
    auth.set_sensitive(true);
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, auth);
    reqwest::Client::builder().default_headers(headers)
}

/// A fresh library secret file in its own temp dir.
pub fn secret_file() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("library.key");
    write_private(&path, &random_hex());
    (dir, path)
}

/// Config for a test node: loopback, mDNS off, fast heartbeats.
pub fn config(dir: &TempDir, secret: &Path) -> Config {
    let mut c = Config::local(dir.path().join("data"));
    c.library_secret_file = Some(secret.to_path_buf());
    c.versions_interval = Duration::from_millis(300);
    c.prune_interval = Duration::from_millis(500);
    c.durability = murmur::store::Durability::Normal;
    c
}

impl TestNode {
    pub async fn start(config: Config, dir: TempDir, secret: PathBuf) -> TestNode {
        let node = Node::start(config).await.expect("node starts");
        let api = format!("http://{}", node.api_addr());
        let http = client_with_token(node.api_token())
            .build()
            .expect("HTTP client");
        TestNode {
            node: Some(node),
            dir,
            secret,
            api,
            http,
        }
    }

    pub async fn new(secret: &Path) -> TestNode {
        Self::new_with(secret, |_| {}).await
    }

    pub async fn new_with(secret: &Path, tweak: impl FnOnce(&mut Config)) -> TestNode {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut c = config(&dir, secret);
        tweak(&mut c);
        Self::start(c, dir, secret.to_path_buf()).await
    }

    pub fn node(&self) -> &Node {
        self.node.as_ref().expect("node is running")
    }

    /// Stops the node, keeping its data dir.
    pub async fn stop(&mut self) {
        if let Some(n) = self.node.take() {
            n.shutdown().await;
        }
    }

    /// Starts the node again on its data dir.
    pub async fn restart_with(&mut self, tweak: impl FnOnce(&mut Config)) {
        self.stop().await;
        let mut c = config(&self.dir, &self.secret);
        tweak(&mut c);
        let node = Node::start(c).await.expect("node restarts");
        self.api = format!("http://{}", node.api_addr());
        self.http = client_with_token(node.api_token())
            .build()
            .expect("HTTP client");
        self.node = Some(node);
    }

    pub async fn addr(&self) -> murmur::p2p::Multiaddr {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(a) = self.node().listen_addrs().await.into_iter().next() {
                return a;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node never listened"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn connect(&self, other: &TestNode) {
        self.node().dial(other.addr().await).await.expect("dial");
    }

    /// One API call; returns the status and the JSON body (null when there is none).
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<J>) -> (u16, J) {
        let mut req = self.http.request(method, format!("{}{path}", self.api));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(J::Null))
    }

    pub async fn post(&self, path: &str, body: J) -> (u16, J) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: J) -> (u16, J) {
        self.call(reqwest::Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, J) {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    pub async fn get(&self, path: &str) -> (u16, J) {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// Creates a tag; returns its uuid.
    pub async fn create_tag(&self, name: &str) -> String {
        let (status, body) = self
            .post("/v1/shared/tags", json!({"name": name, "color": "red"}))
            .await;
        assert_eq!(status, 201, "{body}");
        body["uuid"].as_str().expect("uuid").to_owned()
    }

    pub async fn digest(&self) -> String {
        self.node().store().digest().await.expect("digest").digest
    }
}

/// Polls `check` until it returns true or `timeout` passes (then panics with `what`).
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until every node has the same digest.
pub async fn converged(nodes: &[&TestNode], timeout: Duration) {
    eventually(timeout, "all digests equal", || async {
        let mut ds = Vec::new();
        for n in nodes {
            ds.push(n.digest().await);
        }
        ds.windows(2).all(|w| w[0] == w[1])
    })
    .await;
}

/// Waits until `a` has `n` connected peers.
pub async fn wait_peers(a: &TestNode, n: usize) {
    eventually(Duration::from_secs(15), "peers connected", || async {
        let (_, st) = a.get("/v1/status").await;
        st["peers"]
            .as_array()
            .map(|p| p.iter().filter(|p| p["connected"] == J::Bool(true)).count() >= n)
            .unwrap_or(false)
    })
    .await;
}
