//! The node's files in its data dir: the device key (`identity.key`, an ed25519 keypair)
//! and the library secret.
//!
//! The device key names the device: its client UUID is
//! [`murmur_store::proof::device_uuid`] of the key, and the key signs the device's ops. It
//! is not the node's libp2p identity: the swarm gets a new transport key on every start,
//! which the device key binds to the device ([`crate::device`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use libp2p::identity::Keypair;

use crate::files::{self, create_private_dir, narrow, read_private, write_private};

/// A library's 32-byte secret.
#[derive(Clone, PartialEq, Eq)]
pub struct LibrarySecret(pub [u8; 32]);

impl std::fmt::Debug for LibrarySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LibrarySecret({})", self.library_id())
    }
}

impl LibrarySecret {
    /// A new random secret.
    pub fn generate() -> Self {
        LibrarySecret(rand::random())
    }

    /// Parses 64 hexadecimal characters (surrounding whitespace ignored).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        if text.len() != 64 {
            bail!(
                "a library secret is 64 hexadecimal characters, this one has {}",
                text.len()
            );
        }
        let bytes = hex::decode(text).context("a library secret is 64 hexadecimal characters")?;
        let mut out = [0u8; 32];
        out.copy_from_slice(&bytes);
        Ok(LibrarySecret(out))
    }

    /// Reads a secret file, refusing one that group or others may read.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let bytes = read_private(path).context("cannot use the library secret file")?;
        let text = String::from_utf8_lossy(&bytes);
        Self::parse(&text).with_context(|| format!("bad library secret file {}", path.display()))
    }

    /// A public id of the library (not secret): the first 16 hex characters of a hash.
    pub fn library_id(&self) -> String {
        let h = blake3::keyed_hash(&self.0, b"murmur library id");
        h.to_hex()[..16].to_owned()
    }

    /// The hex form written to `library.key`.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// What the data dir holds.
#[derive(Debug)]
pub struct DataDir {
    /// The directory.
    pub path: PathBuf,
    /// The device key (names the device and signs its ops; not the transport identity).
    pub keypair: Keypair,
    /// The library secret.
    pub secret: LibrarySecret,
    /// Whether this run created the library.
    pub created_library: bool,
}

/// The SQLite file's name in the data dir.
const DATABASE: &str = "library.db";

impl DataDir {
    /// The SQLite file.
    pub fn database(&self) -> PathBuf {
        self.path.join(DATABASE)
    }
}

/// The library a node joins: its secret and where the secret came from (for messages).
#[derive(Debug, Clone)]
pub struct Join {
    /// The secret.
    pub secret: LibrarySecret,
    /// Where it came from: a file, or an environment variable.
    pub from: String,
}

/// Opens the data dir, creating it, the identity and (without `secret_file`) a new library
/// on the first run.
pub fn open_data_dir(path: &Path, secret_file: Option<&Path>) -> anyhow::Result<DataDir> {
    let join = secret_file
        .map(|f| {
            anyhow::Ok(Join {
                secret: LibrarySecret::read(f)?,
                from: f.display().to_string(),
            })
        })
        .transpose()?;
    open_data_dir_joining(path, join)
}

/// Opens the data dir, creating it (0700), the identity and (without `join`) a new library
/// on the first run. Every file in it is readable by its owner only: the secrets are
/// refused when they are not, the database files narrowed.
pub fn open_data_dir_joining(path: &Path, join: Option<Join>) -> anyhow::Result<DataDir> {
    create_private_dir(path).context("cannot create the data dir")?;
    let key_path = path.join("identity.key");
    let db_path = path.join(DATABASE);
    if key_path.exists() && !db_path.exists() {
        // This identity may have authored ops, numbered 1, 2, ... per author. A new database
        // would number new ones from 1 again, and peers would drop them as ops they have.
        bail!(
            "{} holds an identity but no database ({}): writes made now would reuse the \
             sequence numbers of this device's earlier writes, and peers would drop them. \
             Restore the database, or remove {} so this node joins as a new device and gets \
             the library back from its peers (if a first start was interrupted, removing it \
             loses nothing)",
            path.display(),
            db_path.display(),
            key_path.display()
        );
    }
    let keypair = if key_path.exists() {
        let bytes = read_private(&key_path).context("cannot use the device identity")?;
        Keypair::from_protobuf_encoding(&bytes)
            .with_context(|| format!("corrupt identity file {}", key_path.display()))?
    } else {
        let kp = Keypair::generate_ed25519();
        let bytes = kp
            .to_protobuf_encoding()
            .context("cannot encode the new identity")?;
        write_private(&key_path, &bytes)?;
        kp
    };
    let lib_path = path.join("library.key");
    let (secret, created_library) = match join {
        Some(Join { secret: s, from }) => {
            if lib_path.exists() {
                let mine = LibrarySecret::read(&lib_path)?;
                if mine != s {
                    bail!(
                        "{} belongs to library {}, but {} is the secret of library {}: use another data dir",
                        path.display(),
                        mine.library_id(),
                        from,
                        s.library_id()
                    );
                }
            } else {
                write_private(&lib_path, format!("{}\n", s.to_hex()).as_bytes())?;
            }
            (s, false)
        }
        None if lib_path.exists() => (LibrarySecret::read(&lib_path)?, false),
        None => {
            let s = LibrarySecret::generate();
            write_private(&lib_path, format!("{}\n", s.to_hex()).as_bytes())?;
            (s, true)
        }
    };
    // The database and its WAL and SHM files: created 0600 before the store opens it
    // (SQLite gives the other two the database's mode); those of an earlier version,
    // created 0644, narrowed.
    files::create_private_if_missing(&db_path)?;
    for f in [DATABASE, "library.db-wal", "library.db-shm"] {
        narrow(&path.join(f), 0o600)?;
    }
    Ok(DataDir {
        path: path.to_owned(),
        keypair,
        secret,
        created_library,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn secret_parsing() {
        let s = LibrarySecret::generate();
        let back = LibrarySecret::parse(&format!("  {}\n", s.to_hex())).unwrap();
        assert_eq!(back, s);
        assert!(LibrarySecret::parse("abc").is_err());
        assert!(LibrarySecret::parse(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn identity_and_library_persist() {
        let dir = tempfile::tempdir().unwrap();
        let a = open_data_dir(dir.path(), None).unwrap();
        assert!(a.created_library);
        // (The store creates the database after the first open.)
        fs::write(a.database(), b"").unwrap();
        let b = open_data_dir(dir.path(), None).unwrap();
        assert!(!b.created_library);
        assert_eq!(a.secret, b.secret);
        assert_eq!(
            a.keypair.public().to_peer_id(),
            b.keypair.public().to_peer_id()
        );
        let other = dir.path().join("other.key");
        fs::write(&other, LibrarySecret::generate().to_hex()).unwrap();
        assert!(
            open_data_dir(dir.path(), Some(&other)).is_err(),
            "a data dir keeps its library"
        );
    }

    #[test]
    fn an_identity_without_its_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        // First run: neither exists yet; the store then creates the database.
        open_data_dir(dir.path(), None).unwrap();
        fs::write(dir.path().join(DATABASE), b"").unwrap();
        open_data_dir(dir.path(), None).unwrap();
        // The database is lost, the identity kept: refused, saying what to do.
        fs::remove_file(dir.path().join(DATABASE)).unwrap();
        let err = open_data_dir(dir.path(), None).unwrap_err().to_string();
        assert!(
            err.contains("identity.key") && err.contains("reuse"),
            "{err}"
        );
        // Without the identity it starts as a new device of the same library.
        let before = LibrarySecret::read(&dir.path().join("library.key")).unwrap();
        fs::remove_file(dir.path().join("identity.key")).unwrap();
        let d = open_data_dir(dir.path(), None).unwrap();
        assert_eq!(d.secret, before);
        assert!(!d.created_library);
    }
}
