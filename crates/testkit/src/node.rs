//! A node in this process ([`TestNode`]) on loopback with mDNS off, its library secret and
//! test config, its API calls, and waits on what a set of nodes agrees on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use murmur_node::identity::LibrarySecret;
use murmur_node::{Config, Node};
use murmur_p2p::Multiaddr;
use serde_json::{Value as J, json};
use tempfile::TempDir;

use crate::http;
use crate::wait::eventually;

/// A node and its data dir.
pub struct TestNode {
    /// The running node; `None` between [`TestNode::stop`] and a restart.
    pub node: Option<Node>,
    /// The temp dir that holds its data dir (`data`), kept across restarts.
    pub dir: TempDir,
    /// Its library secret file.
    pub secret: PathBuf,
    /// Its API's base URL (`http://127.0.0.1:<port>`).
    pub api: String,
    /// The HTTP client of its API calls.
    pub http: reqwest::Client,
}

/// Sends the tracing of the tests to the test writer, at `MURMUR_LOG` (default `warn`).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MURMUR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Writes a fresh library secret to `path`, readable by its owner only.
pub fn write_secret(path: &Path) {
    write_private(path, &LibrarySecret::generate().to_hex());
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
    write_secret(&path);
    (dir, path)
}

/// Config for a test node in `dir`: loopback, mDNS off, fast heartbeats.
pub fn config(dir: &TempDir, secret: &Path) -> Config {
    config_at(&dir.path().join("data"), secret)
}

/// [`config`] for the data dir `data`.
pub fn config_at(data: &Path, secret: &Path) -> Config {
    let mut c = Config::local(data);
    c.library_secret_file = Some(secret.to_path_buf());
    c.versions_interval = Duration::from_millis(300);
    c.prune_interval = Duration::from_millis(500);
    c.repair_interval = Duration::from_millis(500);
    c.durability = murmur_store::Durability::Normal;
    c
}

impl TestNode {
    /// Starts a node with `config`, whose data dir is in `dir`.
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

    /// A node of the library `secret` with the test [`config`].
    pub async fn new(secret: &Path) -> TestNode {
        Self::new_with(secret, |_| {}).await
    }

    /// [`TestNode::new`] with the config changed by `tweak`.
    pub async fn new_with(secret: &Path, tweak: impl FnOnce(&mut Config)) -> TestNode {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut c = config(&dir, secret);
        tweak(&mut c);
        Self::start(c, dir, secret.to_path_buf()).await
    }

    /// The node's SQLite file (for writes behind its back, [`crate::behind`]).
    pub fn database(&self) -> PathBuf {
        self.dir.path().join("data").join("library.db")
    }

    /// The running node.
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

    /// Its first listen address, once it listens.
    pub async fn addr(&self) -> Multiaddr {
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

    /// Dials `other`.
    pub async fn connect(&self, other: &TestNode) {
        self.node().dial(other.addr().await).await.expect("dial");
    }

    /// A request to its API at `path`, for calls that [`TestNode::call`] does not make.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        http::request(&self.http, method, &format!("{}{path}", self.api))
    }

    /// One API call; returns the status and the JSON body (null when there is none).
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<J>) -> (u16, J) {
        http::send(self.request(method, path), body.as_ref())
            .await
            .expect("request")
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: J) -> (u16, J) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch(&self, path: &str, body: J) -> (u16, J) {
        self.call(reqwest::Method::PATCH, path, Some(body)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> (u16, J) {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    /// `GET path`.
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

    /// The digest of its store.
    pub async fn digest(&self) -> String {
        self.node().store().digest().await.expect("digest").digest
    }

    /// How many ops it rejected for `reason` (the `ops_rejected` metric).
    pub fn rejected(&self, reason: &str) -> u64 {
        self.node()
            .metrics()
            .ops_rejected
            .get_or_create(&murmur_node::metrics::Reason {
                reason: reason.to_owned(),
            })
            .get()
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
