//! The protocol facts Python asks for instead of copying them: keys (the
//! meta key, reading a list key back, a segment's key, the canonical order
//! of an index), stored values (the trailer, the lease marker) and the
//! period calendar. Each function only converts; `listy_core` owns the fact.

use crate::errors::CoreError;
use listy_core::calendar::Period;
use listy_core::codec::{trailer_of, Part};
use listy_core::{engine, keys};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The meta key of a model: deleting it moves every list and counter of
/// the model to a new generation.
#[pyfunction]
fn meta_key(prefix: &str, model: &str) -> String {
    keys::meta_key(prefix, model)
}

/// A list key read back into `{"model", "fingerprint", "generation",
/// "fields", "values"}` (values as text, None for null), or None when `key`
/// is not a list key made with `prefix`.
#[pyfunction]
fn parse_key<'py>(py: Python<'py>, prefix: &str, key: &str) -> PyResult<Option<Bound<'py, PyDict>>> {
    let Some(parsed) = keys::parse_list_key(prefix, key) else {
        return Ok(None);
    };
    let d = PyDict::new(py);
    d.set_item("model", parsed.model)?;
    d.set_item("fingerprint", parsed.fingerprint)?;
    d.set_item("generation", parsed.generation)?;
    d.set_item("fields", parsed.fields)?;
    d.set_item("values", parsed.values)?;
    Ok(Some(d))
}

/// The key of segment `index` of the list build `build_id` whose head is `head_key`.
#[pyfunction]
fn segment_key(head_key: &str, build_id: u32, index: u16) -> String {
    keys::segment_key(head_key, build_id, index)
}

/// The fields of an index in the engine's canonical order.
#[pyfunction]
fn canonical_index(fields: Vec<String>) -> Vec<String> {
    keys::canonical_index(&fields)
}

/// The trailer `raw` ends with, as `{"version", "fingerprint", "head",
/// "segments", "segment", "build_id", "offset", "len"}` (`segments`: parts
/// after a head; `segment`: a segment's index, None for a head), or None.
#[pyfunction]
fn trailer<'py>(py: Python<'py>, raw: &[u8]) -> PyResult<Option<Bound<'py, PyDict>>> {
    let Some(t) = trailer_of(raw) else {
        return Ok(None);
    };
    let (segments, segment) = match t.part {
        Part::Head { segments } => (segments, None),
        Part::Segment { index } => (0, Some(index)),
    };
    let d = PyDict::new(py);
    d.set_item("version", t.version)?;
    d.set_item("fingerprint", t.fingerprint)?;
    d.set_item("head", segment.is_none())?;
    d.set_item("segments", segments)?;
    d.set_item("segment", segment)?;
    d.set_item("build_id", t.id)?;
    d.set_item("offset", t.offset)?;
    d.set_item("len", raw.len() - t.offset)?;
    Ok(Some(d))
}

/// True when `raw` ends with a builder's lease marker (a list being built).
#[pyfunction]
fn is_lease(raw: &[u8]) -> bool {
    engine::is_lease(raw)
}

/// The first day after the bucket of `period` containing `day` (its first
/// day: `bucket_start`, which lives with the engine's binding).
#[pyfunction]
fn bucket_end(period: &str, day: i32) -> PyResult<i32> {
    Ok(Period::parse(period).map_err(CoreError)?.end(day))
}

/// Calls `work()` with the model-wide counter moves of every write it
/// makes on this thread tagged `tag` (a committed write's intent id; 0:
/// untagged), so that a counter built while they are in flight counts
/// them once (`listy_core::engine::with_write_tag`). Returns what `work`
/// returns.
#[pyfunction]
fn with_write_tag(tag: u64, work: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    engine::with_write_tag(tag, || work.call0().map(Bound::unbind))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(with_write_tag, m)?)?;
    m.add_function(wrap_pyfunction!(meta_key, m)?)?;
    m.add_function(wrap_pyfunction!(parse_key, m)?)?;
    m.add_function(wrap_pyfunction!(segment_key, m)?)?;
    m.add_function(wrap_pyfunction!(canonical_index, m)?)?;
    m.add_function(wrap_pyfunction!(trailer, m)?)?;
    m.add_function(wrap_pyfunction!(is_lease, m)?)?;
    m.add_function(wrap_pyfunction!(bucket_end, m)?)?;
    Ok(())
}
