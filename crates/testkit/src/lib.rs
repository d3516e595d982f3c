//! What murmur's tests and benches share, so that each test file holds tests.
//!
//! # Layout
//!
//! - [`wait`]: polling a condition with a deadline (never a fixed sleep as synchronisation).
//! - [`http`]: the one place where requests to a node's HTTP API are built.
//! - [`node`]: a node in this process ([`TestNode`]): secret files, test config, start,
//!   restart, API calls, and waits on digests and peers.
//! - [`cluster`]: in-process nodes in a star, and waiting for an item to reach them.
//! - [`procs`]: `murmur run` processes on loopback, killed with SIGKILL and restarted.
//! - [`lifecycle`]: a process stopped with SIGTERM, restarted, or added on a data dir.
//! - [`behind`]: writes to a library's SQLite file behind murmur's back: as another
//!   program (refused by SQLite), or as a bug or a bad disk would (through the guard).
//! - [`datadir`]: a data dir copied (a backup, a clone) or restored, modes kept.
//! - [`holding`]: what a process node holds, and a wait whose failure names what is missing.
//! - [`ops`]: builders of ops, fields and changes.
//! - [`store`]: a store in a temp dir, a manual clock, a store's whole log.
//! - [`workload`]: random local writes on the default library.
//! - [`hostile`]: a raw libp2p peer that holds the library secret and sends anything.
//!
//! Test code: failures panic with a message (`expect`), which is what a test reports.
//! Nodes run on 127.0.0.1 with mDNS off and explicit connections.

pub mod behind;
pub mod cluster;
pub mod datadir;
pub mod holding;
pub mod hostile;
pub mod http;
pub mod lifecycle;
pub mod node;
pub mod ops;
pub mod procs;
pub mod store;
pub mod wait;
pub mod workload;

pub use node::{
    TestNode, client_with_token, config, converged, init_tracing, random_hex, secret_file,
    wait_peers, write_private, write_secret,
};
pub use ops::{changes, fields, tag};
pub use store::device_key;
pub use wait::eventually;
pub use workload::{random_write, random_write_signed};
