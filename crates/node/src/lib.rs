//! The murmur node: wires the store and the swarm, serves the local API.
//!
//! # Layout
//!
//! - [`config`]: the command line and [`Config`].
//! - [`identity`]: the data dir: the device key (the client UUID derives from it) and the
//!   library secret; [`files`]: owner-only files (0700/0600); [`token`]: the API token.
//! - [`device`]: which device a peer is (a peer id names one run; the device key binds it).
//! - [`devices`]: the library's devices as `/v1/devices` lists them, invitations and
//!   removals ([`invite`]: an invitation's text); the membership itself is the store's
//!   (`murmur_store::members`).
//! - [`protocol`]: gossip and request-response messages, and the network handle's type.
//! - [`sync`]: the sync loop (gossip in, catch-up, snapshots, pruning): the actor, gossip
//!   checks, the request server, the puller and the peer table.
//! - [`feed`]: the one consumer of the store's commit feed: publishes this node's ops,
//!   sends row events, counts what every commit did.
//! - [`api`]: the HTTP API; [`guard`]: its defences (token, Host, JSON only, bounds);
//!   [`status`]: the `/v1/status` document; [`metrics`]: Prometheus.
//! - [`cli`]: the subcommands that talk to a running node.
//! - `fault` (feature `fault-injection`, for tests only): faults injected into a running node.
//!
//! [`run`] is what `murmur run` calls; tests start nodes in-process with [`Node::start`].
#![deny(missing_docs)]

pub mod api;
pub mod cli;
pub mod config;
pub mod device;
pub mod devices;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod feed;
pub mod files;
pub mod guard;
pub mod identity;
pub mod invite;
pub mod metrics;
pub mod protocol;
pub mod status;
pub mod sync;
pub mod token;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use murmur_store::proof::device_uuid;
use murmur_store::{RowEvent, Store, StoreOptions};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, info, info_span};
use uuid::Uuid;

pub use config::{Config, JoinWith};
pub use sync::JoinStatus;

use crate::device::DeviceBinding;
use crate::feed::Feed;
use crate::identity::{Join, LibrarySecret, open_data_dir_joining};
use crate::invite::Invitation;
use crate::metrics::Metrics;
use crate::sync::{PeerTable, SyncLoop, SyncOptions};
use crate::token::{ApiToken, TOKEN_FILE};
use murmur_store::members::Claim;
use murmur_store::proof::Hash;

/// Subscribers of `/v1/events` that fall this far behind are told they lagged.
const EVENTS_CAP: usize = 4096;

/// A running node.
pub struct Node {
    devices: Arc<devices::DevicesSource>,
    join: watch::Receiver<JoinStatus>,
    store: Store,
    net: sync::Net,
    metrics: Arc<Metrics>,
    events: broadcast::Sender<RowEvent>,
    api_addr: SocketAddr,
    api_token: ApiToken,
    library_id: String,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Stops the commit feed's consumer, once the API and the sync loop have stopped.
    feed_shutdown: watch::Sender<bool>,
    feed: JoinHandle<()>,
    #[cfg(feature = "fault-injection")]
    faults: Arc<fault::FaultInjection>,
}

impl Node {
    /// Opens the data dir and the store, starts the swarm, the sync loop and the API.
    pub async fn start(config: Config) -> anyhow::Result<Node> {
        let mut config = config;
        let invitation = match &config.join {
            Some(JoinWith::Invitation(i)) => Some((**i).clone()),
            _ => None,
        };
        let join = match (&config.library_secret, &config.library_secret_file) {
            (Some(s), _) => Some(Join {
                secret: s.clone(),
                from: "MURMUR_LIBRARY_SECRET".into(),
            }),
            (None, Some(f)) => Some(Join {
                secret: LibrarySecret::read(f)?,
                from: f.display().to_string(),
            }),
            (None, None) => invitation.as_ref().map(|i| Join {
                secret: i.secret.clone(),
                from: "the invitation".into(),
            }),
        };
        if let (Some(inv), Some(j)) = (&invitation, &join)
            && inv.secret != j.secret
        {
            anyhow::bail!(
                "the invitation is for library {}, but {} is the secret of library {}",
                inv.secret.library_id(),
                j.from,
                j.secret.library_id()
            );
        }
        if let Some(inv) = &invitation {
            // The member that made the invitation knows it first: dial it.
            config.peers.extend(inv.addrs.iter().cloned());
        }
        let dir = open_data_dir_joining(&config.data_dir, join)?;
        let token_file = config
            .api_options
            .token_file
            .clone()
            .unwrap_or_else(|| config.data_dir.join(TOKEN_FILE));
        let (api_token, new_token) =
            ApiToken::load_or_create(&token_file).context("cannot use the API token")?;
        if new_token {
            info!(token_file = %token_file.display(), "created the API token; programs send it as `Authorization: Bearer <token>`");
        }
        let library_id = dir.secret.library_id();
        if dir.created_library {
            info!(
                library = %library_id,
                secret_file = %config.data_dir.join("library.key").display(),
                "created a new library; give its secret file to other devices (--library-secret-file) to join"
            );
        }
        let device_key = dir
            .keypair
            .clone()
            .try_into_ed25519()
            .context("the device identity must be an ed25519 key")?;
        let client = device_uuid(&device_key.public());
        // The transport identity names this run, not the data dir (see `device`): a copy of
        // the data dir running elsewhere is another peer. The device key binds it.
        let transport = Keypair::generate_ed25519();
        let peer_id = transport.public().to_peer_id();
        let binding = DeviceBinding::sign(&device_key, &peer_id);
        let mut opts = StoreOptions::new(dir.database(), device_key.clone());
        opts.max_drift = config.max_drift;
        opts.clock = config.clock.clone();
        opts.durability = config.durability;
        opts.registry = config.registry.clone();
        let store = Store::open(opts)
            .await
            .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?;
        debug_assert_eq!(
            store.client(),
            client,
            "the store's device is the node's client"
        );
        // Taken before anything can write: every commit from now on is in the feed.
        let commits = store.commits();
        let device_name = device_name(config.device_name.as_deref());

        let mut net_config =
            murmur_p2p::Config::new(transport, dir.secret.0, format!("murmur/{library_id}/ops"));
        net_config.listen = config.listen.clone();
        net_config.peers = config.peers.iter().map(without_peer_id).collect();
        net_config.mdns = config.mdns;
        let (net, net_events) =
            murmur_p2p::spawn::<protocol::Request, protocol::Response>(net_config)
                .context("cannot start the network")?;

        let claim = membership_at_start(
            &store,
            &device_key,
            &dir,
            &config,
            &device_name,
            invitation.as_ref(),
        )
        .await?;
        let (join_status, join_rx) = watch::channel(JoinStatus::None);

        let metrics = Arc::new(Metrics::new());
        #[cfg(feature = "fault-injection")]
        let faults = Arc::new(fault::FaultInjection::new(config.gossip_drop_rate));
        let (events, _) = broadcast::channel(EVENTS_CAP);
        let peers = PeerTable::default();
        let (feed_shutdown, feed_rx) = watch::channel(false);
        let feed = tokio::spawn(
            Feed {
                commits,
                net: net.clone(),
                metrics: metrics.clone(),
                row_events: events.clone(),
            }
            .run(feed_rx)
            .instrument(info_span!("feed", %client)),
        );
        let sync_loop = SyncLoop::new(
            store.clone(),
            net.clone(),
            net_events,
            metrics.clone(),
            peers.clone(),
            binding,
            SyncOptions {
                versions_interval: config.versions_interval,
                prune_interval: config.prune_interval,
                repair_interval: config.repair_interval,
                stale_after: config.stale_after,
                #[cfg(feature = "fault-injection")]
                faults: faults.clone(),
            },
            claim,
            join_status,
        );
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(
            sync_loop
                .run(shutdown_rx.clone())
                .instrument(info_span!("sync", %client)),
        ));

        let devices = Arc::new(devices::DevicesSource {
            store: store.clone(),
            net: net.clone(),
            peers: peers.clone(),
            secret: dir.secret.clone(),
        });
        let state = api::AppState {
            store: store.clone(),
            metrics: metrics.clone(),
            events: events.clone(),
            status: Arc::new(status::StatusSource {
                store: store.clone(),
                net: net.clone(),
                peers,
                library_id: library_id.clone(),
                stale_after: config.stale_after,
                join: join_rx.clone(),
            }),
            devices: devices.clone(),
            max_rows: config.api_options.max_rows,
        };
        let listener = tokio::net::TcpListener::bind(config.api)
            .await
            .with_context(|| format!("cannot listen for the API on {}", config.api))?;
        let api_addr = listener.local_addr()?;
        let mut rx = shutdown_rx;
        let app = guard::protect(api::router(state), api_token.clone(), &config.api_options)?;
        tasks.push(tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = rx.changed().await;
            });
            if let Err(e) = serve.await {
                tracing::error!("API server failed: {e}");
            }
        }));
        info!(%client, %peer_id, library = %library_id, api = %api_addr, device = device_name.as_str(), "murmur node started");
        Ok(Node {
            devices,
            join: join_rx,
            store,
            net,
            metrics,
            events,
            api_addr,
            api_token,
            library_id,
            shutdown,
            tasks,
            feed_shutdown,
            feed,
            #[cfg(feature = "fault-injection")]
            faults,
        })
    }

    /// The store. Writes through it are published like the API's: every commit leaves
    /// through the store's commit feed, which the node consumes.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The library's devices (as `/v1/devices` lists them).
    pub async fn devices(&self) -> anyhow::Result<devices::Devices> {
        Ok(self.devices.list().await?)
    }

    /// Makes an invitation for one new device, valid for `valid_for`.
    pub async fn invite(&self, valid_for: std::time::Duration) -> anyhow::Result<Invitation> {
        Ok(self.devices.invite(valid_for).await?.0)
    }

    /// Removes a device (by name or client UUID); `forget_data` deletes its owned rows
    /// everywhere.
    pub async fn remove_device(&self, device: &str, forget_data: bool) -> anyhow::Result<Uuid> {
        Ok(self.devices.remove(device, forget_data).await?)
    }

    /// Whether `peer` answered this node's `Hello` with `Welcome` (its gossip is taken from
    /// then on; before, it is left to catch-up).
    pub fn welcomed(&self, peer: &PeerId) -> bool {
        self.devices.peers.welcomed(peer)
    }

    /// Where this device's claim of an invitation stands.
    pub fn join_status(&self) -> JoinStatus {
        self.join.borrow().clone()
    }

    /// The API's address.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The API token: programs send it as `Authorization: Bearer <token>`.
    pub fn api_token(&self) -> &str {
        self.api_token.as_str()
    }

    /// The client UUID.
    pub fn client_uuid(&self) -> Uuid {
        self.store.client()
    }

    /// The peer id of this run (a new one on every start).
    pub fn peer_id(&self) -> PeerId {
        self.net.local_peer_id()
    }

    /// The library's public id.
    pub fn library_id(&self) -> &str {
        &self.library_id
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The network layer's counters (gossip and request-response messages and bytes).
    pub fn net_stats(&self) -> murmur_p2p::Stats {
        self.net.stats()
    }

    /// Row changes as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<RowEvent> {
        self.events.subscribe()
    }

    /// The addresses the swarm listens on (with `/p2p/<peer id>`), once it listens.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        let id = self.peer_id();
        self.net
            .listen_addrs()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|a| a.with(libp2p::multiaddr::Protocol::P2p(id)))
            .collect()
    }

    /// Refuses a peer until [`Node::unblock`]: closes its connections and denies new ones
    /// (used to partition a library in tests).
    pub async fn block(&self, peer: PeerId) -> anyhow::Result<()> {
        self.net
            .block(peer)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Accepts a blocked peer again.
    pub async fn unblock(&self, peer: PeerId) -> anyhow::Result<()> {
        self.net
            .unblock(peer)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Test only: drops this share of incoming gossip from now on (0.0 to stop).
    #[cfg(feature = "fault-injection")]
    pub fn set_gossip_drop_rate(&self, rate: f64) {
        self.faults.set_gossip_drop_rate(rate);
    }

    /// Dials a peer.
    pub async fn dial(&self, addr: Multiaddr) -> anyhow::Result<()> {
        self.net
            .dial(addr)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Stops the API and the sync loop, then the commit feed's consumer (which publishes
    /// what they committed), then the swarm, and closes the store.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let _ = self.feed_shutdown.send(true);
        let _ = self.feed.await;
        self.net.shutdown().await;
        self.store.close().await;
        info!("murmur node stopped");
    }
}

/// This device's name: the one configured, else the host name, else "device" (at most
/// [`murmur_store::members::NAME_CAP`] bytes).
pub fn device_name(configured: Option<&str>) -> String {
    let host = || {
        std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
    };
    let name = configured
        .map(str::to_owned)
        .or_else(host)
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "device".to_owned());
    let mut end = name.len().min(murmur_store::members::NAME_CAP);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_owned()
}

/// The membership at start: a device that created the library (or `config.found`) becomes
/// its founder, admits itself and the devices named in advance; a device joining gets the
/// claim it sends to the members it meets (none when it is a member already).
async fn membership_at_start(
    store: &Store,
    device_key: &libp2p::identity::ed25519::Keypair,
    dir: &identity::DataDir,
    config: &Config,
    name: &str,
    invitation: Option<&Invitation>,
) -> anyhow::Result<Option<Claim>> {
    use murmur_store::members::{Event, named_invite_key};
    let me = Hash(device_key.public().to_bytes());
    if (dir.created_library || config.found) && store.members().root.is_none() {
        store.set_member_root(me).await?;
        store
            .record_member_event(Event::Admit {
                device: me,
                name: name.to_owned(),
                invite: None,
            })
            .await?;
        info!(
            device = name,
            "this device founded the library: it admits the others (`murmur invite`)"
        );
    }
    for n in &config.pre_named {
        let m = store.members();
        if m.invites
            .values()
            .any(|i| i.name.as_deref() == Some(n.as_str()))
        {
            continue;
        }
        let (id, key) = named_invite_key(&dir.secret.0, n);
        store
            .record_member_event(Event::Invite {
                id,
                key: Hash(key.public().to_bytes()),
                expires: u64::MAX,
                name: Some(n.clone()),
            })
            .await?;
        info!(
            device = n.as_str(),
            "named a device in advance: it is admitted when it starts with the secret and `--join named`"
        );
    }
    let m = store.members();
    let admitted = m.enforced() && m.devices.get(&store.client()).is_some_and(|d| d.admitted);
    if admitted {
        return Ok(None);
    }
    Ok(match (&config.join, invitation) {
        (_, Some(inv)) => Some(inv.claim(device_key, name)),
        (Some(JoinWith::Named), None) => {
            let (id, key) = named_invite_key(&dir.secret.0, name);
            Some(Claim::new(id, device_key, name, &key))
        }
        _ => None,
    })
}

/// Creates a library (or takes the secret given) in `data_dir` with this device as its
/// founder, and the devices `named` in advance (`murmur init`). Run again, it adds the
/// names not yet named and changes nothing else. Returns the library's id.
pub async fn init(
    data_dir: &std::path::Path,
    device_name: Option<&str>,
    named: &[String],
    secret: Option<LibrarySecret>,
) -> anyhow::Result<String> {
    let mut config = Config::local(data_dir);
    config.device_name = device_name.map(str::to_owned);
    config.found = true;
    config.pre_named = named.to_vec();
    let dir = open_data_dir_joining(
        data_dir,
        secret.map(|secret| Join {
            secret,
            from: "the given secret".into(),
        }),
    )?;
    let device_key = dir
        .keypair
        .clone()
        .try_into_ed25519()
        .context("the device identity must be an ed25519 key")?;
    let mut opts = StoreOptions::new(dir.database(), device_key.clone());
    opts.registry = config.registry.clone();
    let store = Store::open(opts).await?;
    let m = store.members();
    if m.enforced() && m.root != Some(Hash(device_key.public().to_bytes())) {
        anyhow::bail!(
            "{} already belongs to a library founded by another device",
            data_dir.display()
        );
    }
    let name = self::device_name(device_name);
    membership_at_start(&store, &device_key, &dir, &config, &name, None).await?;
    store.close().await;
    Ok(dir.secret.library_id())
}

/// A configured peer's address without a trailing `/p2p/<peer id>`: peer ids change on
/// every start, so the id an address was written with names a run that may be gone, and
/// dialing it would fail with "wrong peer id" forever. The peer is whoever answers there
/// (the library secret keeps strangers out).
fn without_peer_id(addr: &Multiaddr) -> Multiaddr {
    let mut addr = addr.clone();
    if let Some(Protocol::P2p(id)) = addr.iter().last() {
        addr.pop();
        info!(%addr, %id, "configured peer: the /p2p/<id> part is ignored (peer ids change on every start)");
    }
    addr
}

/// Runs a node until `shutdown` completes, then stops it cleanly.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let node = Node::start(config).await?;
    shutdown.await;
    info!("shutting down");
    node.shutdown().await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
