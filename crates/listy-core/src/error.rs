//! The one error type of `listy-core`, [`Error`]. The bindings map each
//! variant to one Python exception class, in one place. A [`Source`]'s
//! failures travel inside it as a [`SourceError`]: a kind and a message,
//! and the source's own error when it has one (the binding keeps the Python
//! exception there, and raises it again unchanged).
//!
//! [`Source`]: crate::engine::Source

use std::io;

/// Everything that can go wrong inside the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A memcached server could not be reached, timed out, or broke the
    /// connection. The caller falls back to the database.
    #[error("memcached server {server} is unavailable: {reason}")]
    Unavailable {
        /// The server (`host:port`, or the embedded store's name).
        server: String,
        /// What the connection reported.
        reason: String,
    },

    /// The server answered something the protocol does not allow.
    #[error("memcached protocol error from {server}: {reason}")]
    Protocol {
        /// The server that answered.
        server: String,
        /// What was wrong with the answer.
        reason: String,
    },

    /// A cached value could not be decoded. The value is treated as a miss
    /// and rebuilt; this error surfaces only where a caller asked to decode
    /// bytes directly.
    #[error("undecodable cached value: {0}; run `rebuild()` on the list or `manage.py listy_flush`")]
    Decode(String),

    /// A row handed to the codec does not fit the schema.
    #[error("row does not match the cached schema: {0}")]
    Schema(String),

    /// Bad configuration (server address, key prefix, index).
    #[error("invalid Listy configuration: {0}")]
    Config(String),

    /// A value is larger than the store's item size limit.
    #[error("value of {size} bytes is larger than the item size limit of {limit} bytes")]
    TooLarge {
        /// The value's size.
        size: usize,
        /// The store's item size limit.
        limit: usize,
    },

    /// The row source (the database side: Django, or a Rust caller's own)
    /// failed or could not answer. The engine never caches around it: the
    /// error reaches the caller unchanged.
    #[error(transparent)]
    Source(#[from] SourceError),
}

impl Error {
    /// True when the error means "the cache is not reachable right now":
    /// the caller should serve from the database instead.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    pub(crate) fn unavailable(server: &str, err: &io::Error) -> Self {
        Error::Unavailable { server: server.to_string(), reason: err.to_string() }
    }

    pub(crate) fn protocol(server: &str, reason: impl Into<String>) -> Self {
        Error::Protocol { server: server.to_string(), reason: reason.into() }
    }
}

/// The result of every fallible call of `listy-core`.
pub type Result<T> = std::result::Result<T, Error>;

/// What kind of failure a [`SourceError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceErrorKind {
    /// The database read failed (connection lost, query refused).
    Database,
    /// The source cannot answer this request by design: it has no database
    /// (a cache-only writer), or the operation has no source at all. A
    /// write that would build a missing list leaves it missing for a reader
    /// that has a database; a read fails with this error.
    Unsupported,
    /// Anything else (an error in the caller's loader code).
    Other,
}

impl std::fmt::Display for SourceErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SourceErrorKind::Database => "database",
            SourceErrorKind::Unsupported => "unsupported",
            SourceErrorKind::Other => "other",
        })
    }
}

/// A failure of a [`Source`](crate::engine::Source): its kind, a message,
/// and the source's own error when there is one.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    kind: SourceErrorKind,
    message: String,
    #[source]
    cause: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SourceError {
    /// An error of `kind` described by `message`.
    pub fn new(kind: SourceErrorKind, message: impl Into<String>) -> SourceError {
        SourceError { kind, message: message.into(), cause: None }
    }

    /// The source cannot answer (see [`SourceErrorKind::Unsupported`]).
    pub fn unsupported(message: impl Into<String>) -> SourceError {
        SourceError::new(SourceErrorKind::Unsupported, message)
    }

    /// Wraps the source's own error; its text becomes the message.
    pub fn caused_by(kind: SourceErrorKind, cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> SourceError {
        let cause = cause.into();
        SourceError { kind, message: cause.to_string(), cause: Some(cause) }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> SourceErrorKind {
        self.kind
    }

    /// The message (the cause's text when there is a cause).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The source's own error, given back (to re-raise it, for example).
    pub fn into_cause(self) -> Option<Box<dyn std::error::Error + Send + Sync>> {
        self.cause
    }
}
