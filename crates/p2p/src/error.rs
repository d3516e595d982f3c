//! Typed errors of the network layer.

use thiserror::Error;

/// An error from a [`Handle`](crate::Handle) command or from [`spawn`](crate::spawn).
#[derive(Debug, Error)]
pub enum P2pError {
    /// The swarm task has stopped (after [`Handle::shutdown`](crate::Handle::shutdown) or a
    /// fatal error); no further command can run.
    #[error("the p2p event loop has shut down")]
    Shutdown,
    /// A gossip payload is larger than the configured limit.
    #[error("message of {size} bytes exceeds the gossip limit of {max} bytes")]
    MessageTooLarge {
        /// Size of the rejected payload.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// gossipsub refused to publish for another reason (signing, full queues, ...).
    #[error("publish failed: {0}")]
    Publish(String),
    /// A dial could not be started (bad address, connection limit, ...).
    #[error("dial failed: {0}")]
    Dial(String),
    /// Listening on an address failed.
    #[error("cannot listen on {address}: {reason}")]
    Listen {
        /// The address given in the configuration.
        address: String,
        /// Why it failed.
        reason: String,
    },
    /// The swarm could not be built (transport, behaviour configuration).
    #[error("cannot build the swarm: {0}")]
    Build(String),
}

/// Why an outbound request got no response.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestError {
    /// No response arrived within the request timeout.
    #[error("request timed out")]
    Timeout,
    /// The connection closed before a response arrived.
    #[error("connection closed before the response arrived")]
    ConnectionClosed,
    /// The peer could not be dialed.
    #[error("could not dial the peer")]
    DialFailure,
    /// The peer does not speak the sync protocol.
    #[error("the peer does not support the sync protocol")]
    UnsupportedProtocol,
    /// The request or its response exceeds a size limit (ours or the peer's).
    #[error("message too large: {0}")]
    TooLarge(String),
    /// The response could not be decoded.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// Another I/O failure on the stream (including a peer that dropped the request
    /// without answering).
    #[error("i/o error: {0}")]
    Io(String),
    /// The swarm task has stopped.
    #[error("the p2p event loop has shut down")]
    Shutdown,
}
