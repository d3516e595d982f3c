//! Counters of the network layer, shared between the swarm task, the codec and handles.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters; cloned cheaply behind an `Arc`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) gossip_received: AtomicU64,
    pub(crate) gossip_rejected: AtomicU64,
    pub(crate) gossip_dropped: AtomicU64,
    pub(crate) gossip_bytes_in: AtomicU64,
    pub(crate) gossip_published: AtomicU64,
    pub(crate) gossip_bytes_out: AtomicU64,
    pub(crate) requests_in: AtomicU64,
    pub(crate) requests_out: AtomicU64,
    pub(crate) request_failures: AtomicU64,
    pub(crate) rejected_requests: AtomicU64,
    pub(crate) rejected_responses: AtomicU64,
    pub(crate) request_bytes_in: AtomicU64,
    pub(crate) request_bytes_out: AtomicU64,
    pub(crate) connection_failures: AtomicU64,
    pub(crate) events_dropped: AtomicU64,
}

impl Counters {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            gossip_received: get(&self.gossip_received),
            gossip_rejected: get(&self.gossip_rejected),
            gossip_dropped: get(&self.gossip_dropped),
            gossip_bytes_in: get(&self.gossip_bytes_in),
            gossip_published: get(&self.gossip_published),
            gossip_bytes_out: get(&self.gossip_bytes_out),
            requests_in: get(&self.requests_in),
            requests_out: get(&self.requests_out),
            request_failures: get(&self.request_failures),
            rejected_requests: get(&self.rejected_requests),
            rejected_responses: get(&self.rejected_responses),
            request_bytes_in: get(&self.request_bytes_in),
            request_bytes_out: get(&self.request_bytes_out),
            connection_failures: get(&self.connection_failures),
            events_dropped: get(&self.events_dropped),
        }
    }
}

/// A snapshot of the network counters, from [`Handle::stats`](crate::Handle::stats).
/// All counters only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Gossip messages received on the library topic (before validation).
    pub gossip_received: u64,
    /// Gossip messages rejected (by the node through `report_validation`, or here because
    /// they were oversized or unsigned).
    pub gossip_rejected: u64,
    /// Gossip messages dropped because the event queue was full (reported `Ignore`).
    pub gossip_dropped: u64,
    /// Payload bytes of received gossip messages.
    pub gossip_bytes_in: u64,
    /// Gossip messages published by this node.
    pub gossip_published: u64,
    /// Payload bytes of published gossip messages.
    pub gossip_bytes_out: u64,
    /// Inbound requests handed to the node.
    pub requests_in: u64,
    /// Outbound requests sent.
    pub requests_out: u64,
    /// Outbound requests that failed (timeout, closed, oversized, ...).
    pub request_failures: u64,
    /// Inbound requests refused by the codec (malformed or oversized).
    pub rejected_requests: u64,
    /// Responses refused by the codec (malformed or oversized), ours or the peer's.
    pub rejected_responses: u64,
    /// Encoded request-response bytes read (requests and responses).
    pub request_bytes_in: u64,
    /// Encoded request-response bytes written (requests and responses).
    pub request_bytes_out: u64,
    /// Failed connection attempts, inbound or outbound.
    pub connection_failures: u64,
    /// Events dropped because the node did not drain the event channel fast enough.
    pub events_dropped: u64,
}
