//! Turning connection errors into a reason a user can act on.
//!
//! With a wrong library key the pnet layer cannot fail cleanly (it has no way to tell a
//! wrong key from noise): the handshake that follows either sees garbage at once or hangs
//! until the upgrade timeout. So a failure *after* the TCP connection is up is reported as a
//! probable library key mismatch, and a failure to reach the address at all is not.

use std::{error::Error, io};

/// A classified connection failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) reason: String,
    pub(crate) probable_key_mismatch: bool,
}

/// The error and its sources, joined with ": ".
pub(crate) fn chain(error: &(dyn Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(error);
    while let Some(e) = current {
        let text = e.to_string();
        // Wrappers often repeat their source's message, or print nothing at all.
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

/// Whether any error in the chain says the address could not be reached (as opposed to a
/// connection that was made and then failed during the handshake).
fn unreachable(error: &(dyn Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            use io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused
                    | HostUnreachable
                    | NetworkUnreachable
                    | AddrNotAvailable
                    | AddrInUse
            ) {
                return true;
            }
        }
        let text = e.to_string().to_lowercase();
        if [
            "connection refused",
            "unreachable",
            "no route",
            "resolve",
            "dns",
            "no such host",
        ]
        .iter()
        .any(|needle| text.contains(needle))
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// Classifies a transport error of a dial or of an inbound connection.
pub(crate) fn classify(error: &(dyn Error + 'static)) -> Failure {
    let detail = chain(error);
    if unreachable(error) {
        Failure {
            reason: format!("connection failed: {detail}"),
            probable_key_mismatch: false,
        }
    } else {
        Failure {
            reason: format!("handshake failed: probable library key mismatch ({detail})"),
            probable_key_mismatch: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(io::Error);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "transport error")
        }
    }
    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn refused_is_not_a_key_mismatch() {
        let e = Wrapper(io::Error::from(io::ErrorKind::ConnectionRefused));
        let f = classify(&e);
        assert!(!f.probable_key_mismatch);
        assert!(f.reason.starts_with("connection failed"), "{}", f.reason);
    }

    #[test]
    fn timeout_or_garbage_after_connect_is_a_probable_key_mismatch() {
        for inner in [
            io::Error::new(io::ErrorKind::TimedOut, "Timeout has been reached"),
            io::Error::new(io::ErrorKind::InvalidData, "Multistream select failed"),
        ] {
            let f = classify(&Wrapper(inner));
            assert!(f.probable_key_mismatch);
            assert!(
                f.reason
                    .starts_with("handshake failed: probable library key mismatch"),
                "{}",
                f.reason
            );
            assert!(f.reason.contains("transport error: "), "{}", f.reason);
        }
    }
}
