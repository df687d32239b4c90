//! Faults: why a read bypassed the cache, or a write fell short, by kind.
//!
//! Callers decide on the kind, never on the text: whether keys may have been
//! left stale (the server was not reached, or answered outside the
//! protocol) or nothing was (a list too large to store, a lease held by
//! another process).

use crate::error::Error;
use std::fmt;

/// The kind of a [`Fault`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// A server could not be reached, timed out or broke the connection.
    Unreachable,
    /// A server answered outside the protocol.
    Protocol,
    /// A value was larger than the store's item size limit.
    TooLarge,
    /// Another process held the list's lease, or took it over: the list was
    /// served from the source without being stored.
    Contended,
    /// Anything else (a value that does not decode, a schema mismatch).
    Other,
}

impl FaultKind {
    /// The kind of an engine error.
    pub fn of(error: &Error) -> FaultKind {
        match error {
            Error::Unavailable { .. } => FaultKind::Unreachable,
            Error::Protocol { .. } => FaultKind::Protocol,
            Error::TooLarge { .. } => FaultKind::TooLarge,
            _ => FaultKind::Other,
        }
    }

    /// Whether a write that met this fault may have left keys the cache
    /// still holds without its frames (so they must be repaired).
    pub fn may_leave_stale_keys(self) -> bool {
        matches!(self, FaultKind::Unreachable | FaultKind::Protocol)
    }

    /// A stable name: `unreachable`, `protocol`, `too_large`, `contended`,
    /// `other`.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Unreachable => "unreachable",
            FaultKind::Protocol => "protocol",
            FaultKind::TooLarge => "too_large",
            FaultKind::Contended => "contended",
            FaultKind::Other => "other",
        }
    }
}

/// One fault: its kind and what happened, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// What kind of fault it is (decide on this).
    pub kind: FaultKind,
    /// What happened (log this).
    pub message: String,
}

impl Fault {
    /// A fault of `kind`.
    pub fn new(kind: FaultKind, message: impl Into<String>) -> Fault {
        Fault { kind, message: message.into() }
    }
}

impl From<&Error> for Fault {
    fn from(error: &Error) -> Fault {
        Fault { kind: FaultKind::of(error), message: error.to_string() }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_the_error_variant_not_its_text() {
        let down = Error::Unavailable { server: "a:1".into(), reason: "refused".into() };
        assert_eq!(FaultKind::of(&down), FaultKind::Unreachable);
        assert!(FaultKind::of(&down).may_leave_stale_keys());
        let big = Error::TooLarge { size: 2, limit: 1 };
        assert_eq!(Fault::from(&big).kind, FaultKind::TooLarge);
        assert!(!FaultKind::TooLarge.may_leave_stale_keys());
        assert!(!FaultKind::Contended.may_leave_stale_keys());
        assert_eq!(FaultKind::of(&Error::Decode("x".into())), FaultKind::Other);
    }
}
