//! The one error type of `listy-core`. The bindings map each variant to one
//! Python exception class, in one place.

use std::io;

/// Everything that can go wrong inside the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A memcached server could not be reached, timed out, or broke the
    /// connection. The caller falls back to the database.
    #[error("memcached server {server} is unavailable: {reason}")]
    Unavailable { server: String, reason: String },

    /// The server answered something the protocol does not allow.
    #[error("memcached protocol error from {server}: {reason}")]
    Protocol { server: String, reason: String },

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
    TooLarge { size: usize, limit: usize },

    /// An error raised by the row source (the Python/Django side).
    #[error("{0}")]
    Source(String),
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

pub type Result<T> = std::result::Result<T, Error>;
