//! The API token: what a program shows (`Authorization: Bearer <token>`) to prove that it
//! may read the user's file, `<data-dir>/api.token`, and so acts for the user.
//!
//! The node creates the file on its first run (256 random bits as 64 hexadecimal
//! characters, mode 0600) and reads it on every later one. To rotate the token, stop the
//! node, delete the file and start it again. A user may also write a token of their own
//! (at least 32 printable characters) into the file before starting the node.

use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

use crate::files::{self, FileError};

/// The token file's name in the data dir.
pub const TOKEN_FILE: &str = "api.token";

/// The fewest characters a token may have (a generated one has 64).
pub const MIN_TOKEN_LEN: usize = 32;

/// What can go wrong with a token file.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// It cannot be read or written, or is too open.
    #[error(transparent)]
    File(#[from] FileError),
    /// Its content is no token.
    #[error(
        "{} holds no API token: a token is at least {MIN_TOKEN_LEN} printable ASCII \
         characters on one line (delete the file and restart the node to get a new one)",
        path.display()
    )]
    Malformed {
        /// The file.
        path: PathBuf,
    },
}

/// An API token. Its `Debug` form does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(…)")
    }
}

impl ApiToken {
    /// A new random token: 32 bytes from the OS's generator, in hexadecimal.
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::random();
        ApiToken(hex::encode(bytes))
    }

    /// Parses a token file's content (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim();
        (t.len() >= MIN_TOKEN_LEN && t.bytes().all(|b| b.is_ascii_graphic()))
            .then(|| ApiToken(t.to_owned()))
    }

    /// Reads a token file, refusing one that group or others may read.
    pub fn read(path: &Path) -> Result<Self, TokenError> {
        let bytes = files::read_private(path)?;
        std::str::from_utf8(&bytes)
            .ok()
            .and_then(Self::parse)
            .ok_or_else(|| TokenError::Malformed {
                path: path.to_owned(),
            })
    }

    /// Reads the token file, or creates it with a new token when there is none. Returns
    /// the token and whether it is new.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), TokenError> {
        if path.exists() {
            return Ok((Self::read(path)?, false));
        }
        let t = Self::generate();
        files::write_private(path, format!("{}\n", t.0).as_bytes())?;
        Ok((t, true))
    }

    /// The token, to send as `Authorization: Bearer <token>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, in time that does not depend on where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_created_once_and_compared_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKEN_FILE);
        let (a, created) = ApiToken::load_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(a.as_str().len(), 64);
        let (b, created) = ApiToken::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(a, b);
        assert!(a.matches(a.as_str().as_bytes()));
        assert!(!a.matches(&a.as_str().as_bytes()[..63]));
        assert!(!a.matches(b""));
        assert!(!a.matches(ApiToken::generate().as_str().as_bytes()));
        assert!(!format!("{a:?}").contains(a.as_str()));
        assert!(ApiToken::parse("short").is_none());
        assert!(ApiToken::parse(&format!("{} x", "a".repeat(40))).is_none());
    }
}
