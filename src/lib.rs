//! murmur: peer-to-peer sync of one SQLite library across a user's devices.
//!
//! This root package re-exports the workspace crates and owns the integration tests
//! (`tests/`) and benchmarks (`benches/`).
pub use murmur_node as node;
pub use murmur_p2p as p2p;
pub use murmur_store as store;
