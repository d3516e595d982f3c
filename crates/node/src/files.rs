//! Files only their owner may read: the data dir (0700) and everything in it (0600).
//!
//! The data dir holds the library's rows, the device key, the library secret and the API
//! token. Other local users must read none of them. New files are created with their final
//! mode (whatever the umask); files of an earlier version that are too open are narrowed
//! at start, except secrets: a secret or token file that group or others may read may have
//! been read already, so the node refuses it, as ssh refuses a private key that is too open,
//! and says how to fix it.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// What can go wrong with a private file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// A secret or token file that group or others may access.
    #[error(
        "permissions {mode:04o} for {} are too open: it holds a secret, so only its owner may \
         read it (anyone else who could read it may have a copy: if in doubt, make a new one). \
         Fix: chmod 600 {}",
        path.display(),
        path.display()
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Reading failed.
    #[error("cannot read {}: {io}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why (in the message, so not a `source` as well).
        io: std::io::Error,
    },
    /// Writing (or narrowing the mode) failed.
    #[error("cannot write {}: {io}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why (in the message, so not a `source` as well).
        io: std::io::Error,
    },
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |io| FileError::Write {
        path: path.to_owned(),
        io,
    }
}

/// The permission bits of group and others.
#[cfg(unix)]
const NOT_OWNER: u32 = 0o077;

/// Creates `path` (and missing parents) with mode 0700; narrows an existing one that group
/// or others may enter to 0700.
pub fn create_private_dir(path: &Path) -> Result<(), FileError> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(path).map_err(write_err(path))?;
    narrow(path, 0o700)
}

/// Narrows an existing file or directory to `mode` when group or others have any access to
/// it (a file of an earlier version, created 0644). Nothing when it does not exist.
pub fn narrow(path: &Path, mode: u32) -> Result<(), FileError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(io) => {
                return Err(FileError::Read {
                    path: path.to_owned(),
                    io,
                });
            }
        };
        let now = meta.permissions().mode() & 0o777;
        if now & NOT_OWNER != 0 {
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(write_err(path))?;
            tracing::warn!(
                path = %path.display(),
                "narrowed permissions from {now:04o} to {mode:04o}: only the owner may read murmur's data"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// Creates an empty file readable by its owner only, unless it exists. The SQLite database
/// is created this way before the store opens it: SQLite then gives its `-wal` and `-shm`
/// files the database file's mode.
pub fn create_private_if_missing(path: &Path) -> Result<(), FileError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(io) => Err(FileError::Write {
            path: path.to_owned(),
            io,
        }),
    }
}

/// Writes a file readable by its owner only (0600 whatever the umask), atomically: a
/// temporary file beside it, synced, then renamed.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let tmp = path.with_extension("tmp");
    {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(write_err(&tmp))?;
        // A leftover temporary file keeps its old mode: set it.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(fs::Permissions::from_mode(0o600))
                .map_err(write_err(&tmp))?;
        }
        f.write_all(bytes).map_err(write_err(&tmp))?;
        f.sync_all().map_err(write_err(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(write_err(path))
}

/// Reads a secret file, refusing it when group or others may access it.
pub fn read_private(path: &Path) -> Result<Vec<u8>, FileError> {
    let read_err = |io| FileError::Read {
        path: path.to_owned(),
        io,
    };
    let mut f = fs::File::open(path).map_err(read_err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = f.metadata().map_err(read_err)?.permissions().mode() & 0o777;
        if mode & NOT_OWNER != 0 {
            return Err(FileError::TooOpen {
                path: path.to_owned(),
                mode,
            });
        }
    }
    let mut out = Vec::new();
    f.read_to_end(&mut out).map_err(read_err)?;
    Ok(out)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn private_files_and_dirs_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a/b");
        create_private_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
        let f = d.join("secret");
        write_private(&f, b"x").unwrap();
        assert_eq!(mode(&f), 0o600);
        assert_eq!(read_private(&f).unwrap(), b"x");
        let db = d.join("db");
        create_private_if_missing(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        // An older data dir: narrowed.
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&db, fs::Permissions::from_mode(0o644)).unwrap();
        create_private_dir(&d).unwrap();
        narrow(&db, 0o600).unwrap();
        assert_eq!((mode(&d), mode(&db)), (0o700, 0o600));
    }

    #[test]
    fn a_secret_others_may_read_is_refused_saying_how_to_fix_it() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("library.key");
        fs::write(&f, b"x").unwrap();
        for m in [0o644, 0o640, 0o604, 0o660] {
            fs::set_permissions(&f, fs::Permissions::from_mode(m)).unwrap();
            let err = read_private(&f).unwrap_err().to_string();
            assert!(
                err.contains("too open") && err.contains(&format!("chmod 600 {}", f.display())),
                "{err}"
            );
        }
        fs::set_permissions(&f, fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(read_private(&f).unwrap(), b"x");
    }
}
