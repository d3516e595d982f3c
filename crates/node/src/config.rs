//! The command line and the node's configuration. Every `run` flag has a `MURMUR_*`
//! environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use libp2p::Multiaddr;
use murmur_store::{Durability, PhysicalClock};

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
    Run(RunArgs),
    /// Show a running node's status: identity, library, peers, sync progress.
    Status(ClientArgs),
    /// List a running node's peers (the client pool).
    Peers(ClientArgs),
    /// Print a running node's digest of all synced state.
    Digest(ClientArgs),
    /// Exit 0 when a running node answers its health check, 1 otherwise (for container
    /// healthchecks).
    Health(ClientArgs),
}

/// Options of the commands that talk to a running node.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The node's API address.
    #[arg(long, env = "MURMUR_API", default_value = "127.0.0.1:7700")]
    pub api: String,
    /// Print the raw JSON instead of a table.
    #[arg(long)]
    pub json: bool,
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
    /// A peer to dial, as a multiaddr, with or without /p2p/<peer id> (repeatable).
    #[arg(long, env = "MURMUR_PEER", value_delimiter = ',')]
    pub peer: Vec<Multiaddr>,
    /// Do not discover peers by mDNS.
    #[arg(long, env = "MURMUR_NO_MDNS")]
    pub no_mdns: bool,
    /// Join the library whose secret (64 hex characters) is in this file. Without it, the
    /// first run creates a new library and writes its secret to <data-dir>/library.key.
    #[arg(long, env = "MURMUR_LIBRARY_SECRET_FILE")]
    pub library_secret_file: Option<PathBuf>,
    /// Refuse remote timestamps further ahead of this clock, in milliseconds.
    #[arg(long, env = "MURMUR_MAX_DRIFT_MS", default_value_t = 100)]
    pub max_drift_ms: u64,
    /// A client unseen for longer than this no longer holds ops back from pruning (e.g.
    /// 30s, 10m, 7d).
    #[arg(long, env = "MURMUR_STALE_AFTER", default_value = "7d", value_parser = humantime::parse_duration)]
    pub stale_after: Duration,
    /// How often the node prunes its op log (advanced).
    #[arg(long, env = "MURMUR_PRUNE_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub prune_interval: Duration,
    /// How often the node announces its version vector to its peers: the heartbeat of the
    /// client pool and what makes lost gossip visible (advanced).
    #[arg(long, env = "MURMUR_ANNOUNCE_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub announce_interval: Duration,
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
    /// Explicit peers.
    pub peers: Vec<Multiaddr>,
    /// mDNS discovery.
    pub mdns: bool,
    /// Secret file of the library to join.
    pub library_secret_file: Option<PathBuf>,
    /// Maximum clock drift accepted.
    pub max_drift: Duration,
    /// When a client counts as stale.
    pub stale_after: Duration,
    /// How often the node announces its version vector (heartbeat and anti-entropy).
    pub versions_interval: Duration,
    /// How often the node prunes its log.
    pub prune_interval: Duration,
    /// fsync policy of the store.
    pub durability: Durability,
    /// The physical clock (tests inject one).
    pub clock: PhysicalClock,
    /// Test only: the share of incoming gossip messages to drop (0.0 in real use).
    #[cfg(feature = "fault-injection")]
    pub gossip_drop_rate: f64,
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
            max_drift: Duration::from_millis(100),
            stale_after: Duration::from_secs(7 * 24 * 3600),
            versions_interval: Duration::from_secs(2),
            prune_interval: Duration::from_secs(30),
            durability: Durability::Full,
            clock: PhysicalClock::System,
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
            max_drift: Duration::from_millis(a.max_drift_ms),
            stale_after: a.stale_after,
            prune_interval: a.prune_interval,
            versions_interval: a.announce_interval,
            ..Config::local(PathBuf::new())
        }
    }
}
