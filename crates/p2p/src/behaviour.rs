//! The composed [`NetworkBehaviour`] and the construction of the swarm (transport stack,
//! gossipsub parameters, peer scoring).

use std::{collections::HashMap, sync::Arc, time::Duration};

use libp2p::Transport as _;
use libp2p::{
    Swarm, SwarmBuilder, allow_block_list, connection_limits,
    core::upgrade::Version,
    dns, gossipsub, identify, mdns, noise, ping,
    pnet::{PnetConfig, PreSharedKey},
    request_response,
    swarm::{NetworkBehaviour, behaviour::toggle::Toggle},
    tcp, yamux,
};
use serde::{Serialize, de::DeserializeOwned};
use tracing::warn;

use crate::{
    codec::{CborCodec, SYNC_PROTOCOL},
    config::Config,
    error::P2pError,
    stats::Counters,
};

/// Room for the protobuf envelope (signature, key, topic, sequence number) around a
/// gossip payload, so that a payload of exactly `max_gossip_bytes` still fits in one RPC.
const GOSSIP_ENVELOPE_BYTES: usize = 16 * 1024;

/// identify protocol version announced by murmur nodes.
const IDENTIFY_PROTOCOL: &str = "/murmur/id/1";

/// The behaviours of a murmur swarm. Field order is polling order.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour<Req, Resp>
where
    Req: Serialize + DeserializeOwned + Send + Sync + std::fmt::Debug + 'static,
    Resp: Serialize + DeserializeOwned + Send + Sync + std::fmt::Debug + 'static,
{
    /// Peers this node refuses (a partition, or a device the user turned away).
    pub(crate) blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) request_response: request_response::Behaviour<CborCodec<Req, Resp>>,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
}

/// The gossipsub message id: blake3 of the payload, so the same content is one message
/// whoever relays it (and identical payloads within the duplicate-cache window are
/// deduplicated).
fn content_message_id(message: &gossipsub::Message) -> gossipsub::MessageId {
    gossipsub::MessageId::from(blake3::hash(&message.data).as_bytes().to_vec())
}

fn gossipsub_config(config: &Config) -> Result<gossipsub::Config, P2pError> {
    gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .message_id_fn(content_message_id)
        .max_transmit_size(
            config
                .max_gossip_bytes
                .saturating_add(GOSSIP_ENVELOPE_BYTES),
        )
        .heartbeat_interval(config.heartbeat_interval)
        .heartbeat_initial_delay(Duration::from_millis(100))
        .flood_publish(true)
        .build()
        .map_err(|e| P2pError::Build(format!("gossipsub config: {e}")))
}

/// Peer scoring tuned for a small, mostly quiet LAN library: rejected (invalid) messages
/// cost a lot, while the delivery-rate penalties meant for busy public topics are off (a
/// quiet library must not look like a misbehaving peer). One rejected message costs 10
/// points; a handful in quick succession passes the graylist threshold (-80), after which
/// the peer's messages are ignored until the penalty decays (about 10% per second).
fn peer_score(
    topic: &gossipsub::IdentTopic,
) -> (gossipsub::PeerScoreParams, gossipsub::PeerScoreThresholds) {
    let topic_params = gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 10.0,
        first_message_deliveries_weight: 0.1,
        first_message_deliveries_decay: 0.9,
        first_message_deliveries_cap: 10.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: 0.9,
        ..Default::default()
    };
    let params = gossipsub::PeerScoreParams {
        topics: HashMap::from([(topic.hash(), topic_params)]),
        topic_score_cap: 10.0,
        // A LAN cluster (or docker network, or loopback) legitimately has many peers per IP.
        ip_colocation_factor_weight: 0.0,
        ..Default::default()
    };
    (params, gossipsub::PeerScoreThresholds::default())
}

/// Builds the swarm: TCP (+ DNS) → pnet → noise → yamux, with a short upgrade timeout.
pub(crate) fn build_swarm<Req, Resp>(
    config: &Config,
    topic: &gossipsub::IdentTopic,
    counters: Arc<Counters>,
) -> Result<Swarm<Behaviour<Req, Resp>>, P2pError>
where
    Req: Serialize + DeserializeOwned + Send + Sync + std::fmt::Debug + 'static,
    Resp: Serialize + DeserializeOwned + Send + Sync + std::fmt::Debug + 'static,
{
    let psk = PreSharedKey::new(config.library_secret);
    let handshake_timeout = config.handshake_timeout;
    let keypair = config.keypair.clone();
    let local_peer_id = keypair.public().to_peer_id();

    let mut gossipsub = gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Signed(keypair.clone()),
        gossipsub_config(config)?,
    )
    .map_err(|e| P2pError::Build(format!("gossipsub: {e}")))?;
    let (score_params, score_thresholds) = peer_score(topic);
    gossipsub
        .with_peer_score(score_params, score_thresholds)
        .map_err(|e| P2pError::Build(format!("gossipsub peer score: {e}")))?;
    gossipsub
        .subscribe(topic)
        .map_err(|e| P2pError::Build(format!("subscribe to {topic}: {e}")))?;

    let request_response = request_response::Behaviour::with_codec(
        CborCodec::new(
            config.max_request_bytes,
            config.max_response_bytes,
            counters,
        ),
        [(SYNC_PROTOCOL, request_response::ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(config.request_timeout)
            .with_max_concurrent_streams(config.max_concurrent_streams),
    );

    let mdns = if config.mdns {
        let mdns_config = mdns::Config {
            query_interval: config.mdns_query_interval,
            ..Default::default()
        };
        Some(
            mdns::tokio::Behaviour::new(mdns_config, local_peer_id)
                .map_err(|e| P2pError::Build(format!("mdns: {e}")))?,
        )
    } else {
        None
    };

    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(config.max_connections))
        // Two per peer: both sides of a pair may dial each other at the same moment when
        // each lists the other as an explicit peer.
        .with_max_established_per_peer(Some(2))
        .with_max_pending_incoming(Some(32))
        .with_max_pending_outgoing(Some(32));

    let behaviour = Behaviour {
        blocked: allow_block_list::Behaviour::default(),
        limits: connection_limits::Behaviour::new(limits),
        gossipsub,
        request_response,
        identify: identify::Behaviour::new(identify::Config::new(
            IDENTIFY_PROTOCOL.to_owned(),
            keypair.public(),
        )),
        // Pings every 5 s; one unanswered for 10 s closes the connection (see the event loop).
        ping: ping::Behaviour::new(
            ping::Config::new()
                .with_interval(Duration::from_secs(5))
                .with_timeout(Duration::from_secs(10)),
        ),
        mdns: Toggle::from(mdns),
    };

    let swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_other_transport(|key| {
            let noise = noise::Config::new(key)?;
            let tcp_config = tcp::Config::default().nodelay(true);
            let tcp_dns = match dns::tokio::Transport::system(tcp::tokio::Transport::new(
                tcp_config.clone(),
            )) {
                Ok(transport) => transport,
                Err(e) => {
                    warn!(error = %e, "no system DNS configuration; /dns peers will not resolve");
                    dns::tokio::Transport::custom(
                        tcp::tokio::Transport::new(tcp_config),
                        dns::ResolverConfig::from_parts(None, Vec::new(), Vec::new()),
                        dns::ResolverOpts::default(),
                    )
                }
            };
            let transport = tcp_dns
                .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
                .upgrade(Version::V1)
                .authenticate(noise)
                .multiplex(yamux::Config::default())
                .timeout(handshake_timeout);
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(transport)
        })
        .map_err(|e| P2pError::Build(format!("transport: {e}")))?
        .with_behaviour(|_| behaviour)
        .map_err(|e| P2pError::Build(format!("behaviour: {e}")))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_timeout))
        .build();
    Ok(swarm)
}
