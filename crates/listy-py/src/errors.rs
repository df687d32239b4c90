//! The one place where `listy_core::Error` becomes a Python exception.

use listy_core::Error;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(listy, ListyError, PyException, "Root of every Listy exception.");
create_exception!(
    listy,
    NotCachableException,
    ListyError,
    "Filters that match no configured index, or unknown field names."
);
create_exception!(
    listy,
    CacheUnavailable,
    ListyError,
    "memcached is down or timed out; reads fall back to the database."
);
create_exception!(listy, DecodeError, ListyError, "Bytes in the cache that are not a valid list for this schema.");
create_exception!(listy, ConfigError, ListyError, "Bad LISTY settings, index declaration or row shape.");

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("ListyError", py.get_type::<ListyError>())?;
    m.add("NotCachableException", py.get_type::<NotCachableException>())?;
    m.add("CacheUnavailable", py.get_type::<CacheUnavailable>())?;
    m.add("DecodeError", py.get_type::<DecodeError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    Ok(())
}

/// Wraps a core error so `?` converts it.
pub struct CoreError(pub Error);

impl From<Error> for CoreError {
    fn from(e: Error) -> Self {
        CoreError(e)
    }
}

impl From<CoreError> for PyErr {
    fn from(e: CoreError) -> PyErr {
        let msg = e.0.to_string();
        match e.0 {
            Error::Unavailable { .. } | Error::Protocol { .. } => CacheUnavailable::new_err(msg),
            Error::Decode(_) => DecodeError::new_err(msg),
            Error::Config(_) | Error::Schema(_) | Error::TooLarge { .. } => ConfigError::new_err(msg),
            // A Python loader's own exception is raised again unchanged.
            Error::Source(source) => match source.into_cause().map(|cause| cause.downcast::<PyErr>()) {
                Some(Ok(raised)) => *raised,
                _ => ListyError::new_err(msg),
            },
        }
    }
}

/// An error on its way to Python: a loader's own exception, kept as it was
/// raised, or a core error mapped to its class. The error type of the lazy
/// reader's completion (`listy_core::reader::Completion`).
pub struct Raised(pub PyErr);

impl From<Error> for Raised {
    fn from(e: Error) -> Self {
        Raised(CoreError(e).into())
    }
}

impl From<Raised> for PyErr {
    fn from(e: Raised) -> PyErr {
        e.0
    }
}
