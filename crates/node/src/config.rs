//! The command line and the node's configuration. Every `run` flag has a `MURMUR_*`
//! environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use libp2p::Multiaddr;
use murmur_store::{Durability, PhysicalClock};

use crate::guard::ApiOptions;
use crate::identity::LibrarySecret;

/// murmur: keeps one SQLite library identical across your devices on a LAN, peer to peer.
#[derive(Debug, Parser)]
#[command(name = "murmur", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node.
    Run(Box<RunArgs>),
    /// Show a running node's status: identity, library, peers, sync progress.
    Status(ClientArgs),
    /// List a running node's peers (the client pool).
    Peers(ClientArgs),
    /// Print a running node's digest of all synced state.
    Digest(ClientArgs),
    /// Find the rows where a running node and one of its peers differ (by the digest's
    /// key ranges) and print them.
    Diff(DiffArgs),
    /// Exit 0 when a running node answers its health check, 1 otherwise (for container
    /// healthchecks).
    Health(ClientArgs),
    /// Create a library with this device as its founder (and devices named in advance).
    Init(InitArgs),
    /// Make an invitation for one new device (ask a running member).
    Invite(InviteArgs),
    /// List the library's devices, or remove one.
    Devices(DevicesArgs),
}

/// Options of the commands that talk to a running node.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The node's API address.
    #[arg(long, env = "MURMUR_API", default_value = "127.0.0.1:7700")]
    pub api: String,
    /// The node's data dir: the API token is read from <data-dir>/api.token.
    #[arg(long, env = "MURMUR_DATA_DIR", default_value = "./murmur-data")]
    pub data_dir: PathBuf,
    /// Read the API token from this file instead (e.g. a copy of a container's api.token).
    #[arg(long, env = "MURMUR_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Print the raw JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Options of `murmur diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The connected peer to compare with: its peer id or its client UUID.
    #[arg(long)]
    pub peer: String,
    /// How to reach the node.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Options of `murmur run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Where the node keeps its database, identity and library secret.
    #[arg(long, env = "MURMUR_DATA_DIR", default_value = "./murmur-data")]
    pub data_dir: PathBuf,
    /// Address to listen on for peers (repeatable).
    #[arg(
        long,
        env = "MURMUR_LISTEN",
        value_delimiter = ',',
        default_value = "/ip4/0.0.0.0/tcp/0"
    )]
    pub listen: Vec<Multiaddr>,
    /// Address of the local HTTP API.
    #[arg(long, env = "MURMUR_API", default_value = "127.0.0.1:7700")]
    pub api: SocketAddr,
    /// A peer to dial, as a multiaddr (repeatable). A trailing /p2p/<peer id> is ignored:
    /// peer ids change on every start.
    #[arg(long, env = "MURMUR_PEER", value_delimiter = ',')]
    pub peer: Vec<Multiaddr>,
    /// Do not discover peers by mDNS.
    #[arg(long, env = "MURMUR_NO_MDNS")]
    pub no_mdns: bool,
    /// Join the library whose secret (64 hex characters) is in this file. Without it, the
    /// first run creates a new library and writes its secret to <data-dir>/library.key.
    #[arg(long, env = "MURMUR_LIBRARY_SECRET_FILE")]
    pub library_secret_file: Option<PathBuf>,
    /// Join the library with this secret (64 hex characters) instead of a file; for
    /// containers, where a file mounted from the host keeps the host's owner. Give it as
    /// the environment variable: a command line is visible to every local user.
    #[arg(
        long,
        env = "MURMUR_LIBRARY_SECRET",
        hide_env_values = true,
        conflicts_with = "library_secret_file",
        value_parser = |s: &str| LibrarySecret::parse(s).map_err(|e| e.to_string())
    )]
    pub library_secret: Option<LibrarySecret>,
    /// The API token file: created with a new random token when missing (default
    /// <data-dir>/api.token). Delete it and restart to rotate the token.
    #[arg(long, env = "MURMUR_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Also answer API requests whose Host header names this host (any port); by default
    /// only localhost, 127.0.0.1 and [::1] are answered, against DNS rebinding (repeatable).
    #[arg(long, env = "MURMUR_API_ALLOW_HOST", value_delimiter = ',')]
    pub api_allow_host: Vec<String>,
    /// Let web pages of this origin (e.g. http://localhost:3000) call the API: CORS headers
    /// and preflights for it only. None by default (repeatable).
    #[arg(long, env = "MURMUR_API_ALLOW_ORIGIN", value_delimiter = ',')]
    pub api_allow_origin: Vec<String>,
    /// Largest API request body, in bytes.
    #[arg(long, env = "MURMUR_API_BODY_LIMIT", default_value_t = crate::guard::BODY_LIMIT)]
    pub api_body_limit: usize,
    /// Most rows in one `POST /v1/owned/{resource}`, and entries in one `POST /v1/batch`.
    #[arg(long, env = "MURMUR_API_MAX_ROWS", default_value_t = crate::guard::MAX_ROWS)]
    pub api_max_rows: usize,
    /// Most write requests (POST, PATCH, DELETE) handled at once; later ones wait, their
    /// bodies unread, until one finishes.
    #[arg(long, env = "MURMUR_API_MAX_WRITES", default_value_t = crate::guard::MAX_WRITES)]
    pub api_max_writes: usize,
    /// Refuse remote timestamps further ahead of this clock, in milliseconds.
    #[arg(long, env = "MURMUR_MAX_DRIFT_MS", default_value_t = 100)]
    pub max_drift_ms: u64,
    /// A client unheard of for this long, counted while this node is in contact with
    /// other peers, no longer holds ops back from pruning (e.g. 30s, 10m, 7d). An op is
    /// never pruned before another client holds it.
    #[arg(long, env = "MURMUR_STALE_AFTER", default_value = "7d", value_parser = humantime::parse_duration)]
    pub stale_after: Duration,
    /// How often the node prunes its op log (advanced).
    #[arg(long, env = "MURMUR_PRUNE_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub prune_interval: Duration,
    /// How often the node announces its version vector to its peers: the heartbeat of the
    /// client pool and what makes lost gossip visible (advanced).
    #[arg(long, env = "MURMUR_ANNOUNCE_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub announce_interval: Duration,
    /// How often the node compares its digest with a peer that holds the same ops, and
    /// repairs the rows where they differ (advanced).
    #[arg(long, env = "MURMUR_REPAIR_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub repair_interval: Duration,
    /// This device's name among the library's devices (default: the host name).
    #[arg(long, env = "MURMUR_DEVICE_NAME")]
    pub device_name: Option<String>,
    /// Join a library: an invitation from `murmur invite` (its text, or a file holding
    /// it), or `named` for a device named in advance by `murmur init --devices`.
    #[arg(long, env = "MURMUR_JOIN", hide_env_values = true, value_parser = parse_join)]
    pub join: Option<JoinWith>,
}

fn parse_secret(s: &str) -> Result<LibrarySecret, String> {
    LibrarySecret::parse(s).map_err(|e| e.to_string())
}

fn parse_join(s: &str) -> Result<JoinWith, String> {
    JoinWith::parse(s).map_err(|e| e.to_string())
}

/// Options of `murmur init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Data dir of the new library's first device.
    #[arg(long, env = "MURMUR_DATA_DIR", default_value = "./murmur-data")]
    pub data_dir: PathBuf,
    /// This device's name (default: the host name).
    #[arg(long, env = "MURMUR_DEVICE_NAME")]
    pub device_name: Option<String>,
    /// Devices named in advance (comma-separated): each is admitted when it starts with
    /// the library secret and `--device-name <name> --join named`, once.
    #[arg(long, env = "MURMUR_DEVICES", value_delimiter = ',')]
    pub devices: Vec<String>,
    /// Use this library's secret (64 hex characters in a file) instead of a new one.
    #[arg(long, env = "MURMUR_LIBRARY_SECRET_FILE")]
    pub library_secret_file: Option<PathBuf>,
    /// Use this library's secret (the environment variable, for containers).
    #[arg(long, env = "MURMUR_LIBRARY_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub library_secret: Option<LibrarySecret>,
}

/// Options of `murmur invite`.
#[derive(Debug, Args)]
pub struct InviteArgs {
    /// How long the invitation may be used (e.g. 10m, 1h, 7d).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub expires: Duration,
    /// Write the invitation to this file (mode 0600) instead of printing it.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The node to ask.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Options of `murmur devices`.
#[derive(Debug, Args)]
pub struct DevicesArgs {
    /// `remove <name|client>`, or nothing to list the devices.
    #[command(subcommand)]
    pub action: Option<DevicesAction>,
    /// The node to ask.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// What `murmur devices` does.
#[derive(Debug, Subcommand)]
pub enum DevicesAction {
    /// Remove a device (lost, sold, retired): every node refuses it from then on.
    Remove {
        /// Its name or client UUID.
        device: String,
        /// Also delete its owned rows (file paths, media data) on every node.
        #[arg(long)]
        forget_data: bool,
        /// The node to ask.
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// A node's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data dir.
    pub data_dir: PathBuf,
    /// Listen multiaddrs.
    pub listen: Vec<Multiaddr>,
    /// API address (port 0 picks one; see `Node::api_addr`).
    pub api: SocketAddr,
    /// Explicit peers (a trailing `/p2p/<id>` is dropped: peer ids change on every start).
    pub peers: Vec<Multiaddr>,
    /// mDNS discovery.
    pub mdns: bool,
    /// Secret file of the library to join.
    pub library_secret_file: Option<PathBuf>,
    /// Secret of the library to join (instead of a file).
    pub library_secret: Option<LibrarySecret>,
    /// The API's token file and request limits.
    pub api_options: ApiOptions,
    /// Maximum clock drift accepted.
    pub max_drift: Duration,
    /// When a client counts as stale.
    pub stale_after: Duration,
    /// How often the node announces its version vector (heartbeat and anti-entropy).
    pub versions_interval: Duration,
    /// How often the node prunes its log.
    pub prune_interval: Duration,
    /// How often the node compares digests with a settled peer and repairs differences.
    pub repair_interval: Duration,
    /// fsync policy of the store.
    pub durability: Durability,
    /// The physical clock (tests inject one).
    pub clock: PhysicalClock,
    /// The synced resources (an embedder that adds resources, or a test of another build's
    /// schema, sets its own; their tables must exist).
    pub registry: murmur_store::Registry,
    /// This device's name among the library's devices (default: the host name).
    pub device_name: Option<String>,
    /// How this device joins the library: with an invitation, or by the name a member
    /// gave it in advance (`murmur init --devices`).
    pub join: Option<JoinWith>,
    /// Record this device as the library's founder (its trust root) when none is recorded.
    /// A node that creates a new library does so by itself.
    pub found: bool,
    /// Devices named in advance (`murmur init --devices`): each is admitted when it claims
    /// its name with the library secret, once.
    pub pre_named: Vec<String>,
    /// Test only: the share of incoming gossip messages to drop (0.0 in real use).
    #[cfg(feature = "fault-injection")]
    pub gossip_drop_rate: f64,
}

/// How a new device joins.
#[derive(Debug, Clone)]
pub enum JoinWith {
    /// An invitation a member made (`murmur invite`).
    Invitation(Box<crate::invite::Invitation>),
    /// The name a member gave this device in advance, claimed with the library secret.
    Named,
}

impl JoinWith {
    /// Parses `--join`: `named`, an invitation's text, or a file holding one.
    pub fn parse(text: &str) -> anyhow::Result<JoinWith> {
        let text = text.trim();
        if text == "named" {
            return Ok(JoinWith::Named);
        }
        if text.starts_with(crate::invite::PREFIX) {
            return Ok(JoinWith::Invitation(Box::new(
                crate::invite::Invitation::parse(text)?,
            )));
        }
        let bytes = crate::files::read_private(std::path::Path::new(text)).map_err(|e| {
            anyhow::anyhow!("--join {text}: not an invitation, nor a file holding one: {e}")
        })?;
        Ok(JoinWith::Invitation(Box::new(
            crate::invite::Invitation::parse(&String::from_utf8_lossy(&bytes))?,
        )))
    }
}

impl Config {
    /// Defaults for a node at `data_dir`: loopback API on a free port, listening on a free
    /// loopback port, mDNS off. Handy for tests and embedding.
    pub fn local(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            listen: vec![
                "/ip4/127.0.0.1/tcp/0"
                    .parse()
                    .expect("a valid literal multiaddr"),
            ],
            api: SocketAddr::from(([127, 0, 0, 1], 0)),
            peers: Vec::new(),
            mdns: false,
            library_secret_file: None,
            library_secret: None,
            api_options: ApiOptions::default(),
            max_drift: Duration::from_millis(100),
            stale_after: Duration::from_secs(7 * 24 * 3600),
            versions_interval: Duration::from_secs(2),
            prune_interval: Duration::from_secs(30),
            repair_interval: Duration::from_secs(30),
            durability: Durability::Full,
            clock: PhysicalClock::System,
            registry: murmur_store::Registry::default_library(),
            device_name: None,
            join: None,
            found: false,
            pre_named: Vec::new(),
            #[cfg(feature = "fault-injection")]
            gossip_drop_rate: 0.0,
        }
    }
}

impl From<RunArgs> for Config {
    fn from(a: RunArgs) -> Self {
        Config {
            data_dir: a.data_dir,
            // An empty value (e.g. MURMUR_PEER="") is no address.
            listen: a.listen.into_iter().filter(|m| !m.is_empty()).collect(),
            api: a.api,
            peers: a.peer.into_iter().filter(|m| !m.is_empty()).collect(),
            mdns: !a.no_mdns,
            library_secret_file: a.library_secret_file,
            library_secret: a.library_secret,
            api_options: ApiOptions {
                token_file: a.api_token_file,
                allow_hosts: a
                    .api_allow_host
                    .into_iter()
                    .filter(|h| !h.is_empty())
                    .collect(),
                allow_origins: a
                    .api_allow_origin
                    .into_iter()
                    .filter(|o| !o.is_empty())
                    .collect(),
                body_limit: a.api_body_limit,
                max_rows: a.api_max_rows,
                max_writes: a.api_max_writes,
            },
            max_drift: Duration::from_millis(a.max_drift_ms),
            stale_after: a.stale_after,
            prune_interval: a.prune_interval,
            versions_interval: a.announce_interval,
            repair_interval: a.repair_interval,
            device_name: a.device_name.filter(|n| !n.is_empty()),
            join: a.join,
            ..Config::local(PathBuf::new())
        }
    }
}
