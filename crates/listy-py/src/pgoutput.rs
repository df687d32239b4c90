//! `decode_pgoutput`: one pgoutput message (`listy_core::pgoutput`) as a
//! Python tuple, for `listy.sync`. Converts only: the decoder is the core's.

use listy_core::pgoutput::{decode, Datum, Message, OldImage};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use pyo3::IntoPyObjectExt;

/// A row image: a tuple with `None` for NULL, `bytes` for a value (text
/// form, or binary form with `binary 'true'`) and `Ellipsis` for an
/// unchanged TOASTed value the message did not carry.
fn tuple_to_py<'py>(py: Python<'py>, datums: &[Datum<'_>]) -> PyResult<Bound<'py, PyTuple>> {
    let items = datums
        .iter()
        .map(|d| match d {
            Datum::Null => Ok(py.None().into_bound(py)),
            Datum::Unchanged => Ok(py.Ellipsis().into_bound(py)),
            Datum::Text(b) | Datum::Binary(b) => Ok(PyBytes::new(py, b).into_any()),
        })
        .collect::<PyResult<Vec<_>>>()?;
    PyTuple::new(py, items)
}

fn image(kind: OldImage) -> &'static str {
    match kind {
        OldImage::Key => "K",
        OldImage::Full => "O",
    }
}

/// Decodes one pgoutput message (protocol 1) into a tuple whose first item
/// is the message type:
///
/// - `("B", final_lsn, commit_time_us_since_2000, xid)`
/// - `("C", commit_lsn, end_lsn, commit_time)`
/// - `("O", commit_lsn, origin_name)`
/// - `("R", oid, namespace, name, replica_identity, [(column, type_oid, typmod, is_key), ...])`
/// - `("Y", oid, namespace, name)`
/// - `("I", oid, None, new)`, `("U", oid, old_or_None, new)`, `("D", oid, old, None)`
///   where `old` is `(image, tuple)` with image `"K"` (key columns) or `"O"` (full)
/// - `("T", options, [oid, ...])`
/// - `("M", transactional, lsn, prefix, content)`
///
/// Raises ValueError naming the byte offset for a message it cannot decode.
#[pyfunction]
pub fn decode_pgoutput<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyTuple>> {
    let msg = decode(data).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let tag = (msg.tag() as char).to_string();
    let items: Vec<Bound<'py, PyAny>> = match msg {
        Message::Begin { final_lsn, commit_time, xid } => {
            vec![
                tag.into_bound_py_any(py)?,
                final_lsn.into_bound_py_any(py)?,
                commit_time.into_bound_py_any(py)?,
                xid.into_bound_py_any(py)?,
            ]
        }
        Message::Commit { commit_lsn, end_lsn, commit_time, .. } => vec![
            tag.into_bound_py_any(py)?,
            commit_lsn.into_bound_py_any(py)?,
            end_lsn.into_bound_py_any(py)?,
            commit_time.into_bound_py_any(py)?,
        ],
        Message::Origin { commit_lsn, name } => {
            vec![tag.into_bound_py_any(py)?, commit_lsn.into_bound_py_any(py)?, name.into_bound_py_any(py)?]
        }
        Message::Relation(rel) => {
            let cols = PyList::empty(py);
            for c in &rel.columns {
                cols.append((c.name, c.type_oid, c.type_modifier, c.key))?;
            }
            vec![
                tag.into_bound_py_any(py)?,
                rel.oid.into_bound_py_any(py)?,
                rel.namespace.into_bound_py_any(py)?,
                rel.name.into_bound_py_any(py)?,
                (rel.replica_identity as char).to_string().into_bound_py_any(py)?,
                cols.into_any(),
            ]
        }
        Message::Type { oid, namespace, name } => vec![
            tag.into_bound_py_any(py)?,
            oid.into_bound_py_any(py)?,
            namespace.into_bound_py_any(py)?,
            name.into_bound_py_any(py)?,
        ],
        Message::Insert { relation, new } => vec![
            tag.into_bound_py_any(py)?,
            relation.into_bound_py_any(py)?,
            py.None().into_bound(py),
            tuple_to_py(py, &new)?.into_any(),
        ],
        Message::Update { relation, old, new } => {
            let old = match old {
                Some((kind, t)) => (image(kind), tuple_to_py(py, &t)?).into_bound_py_any(py)?,
                None => py.None().into_bound(py),
            };
            vec![tag.into_bound_py_any(py)?, relation.into_bound_py_any(py)?, old, tuple_to_py(py, &new)?.into_any()]
        }
        Message::Delete { relation, kind, old } => vec![
            tag.into_bound_py_any(py)?,
            relation.into_bound_py_any(py)?,
            (image(kind), tuple_to_py(py, &old)?).into_bound_py_any(py)?,
            py.None().into_bound(py),
        ],
        Message::Truncate { options, relations } => {
            vec![tag.into_bound_py_any(py)?, options.into_bound_py_any(py)?, relations.into_bound_py_any(py)?]
        }
        Message::Logical { transactional, lsn, prefix, content } => vec![
            tag.into_bound_py_any(py)?,
            transactional.into_bound_py_any(py)?,
            lsn.into_bound_py_any(py)?,
            prefix.into_bound_py_any(py)?,
            PyBytes::new(py, content).into_any(),
        ],
    };
    PyTuple::new(py, items)
}

/// A pg_lsn in PostgreSQL's text form (`16/B374D848`).
#[pyfunction]
pub fn format_lsn(lsn: u64) -> String {
    listy_core::pgoutput::format_lsn(lsn)
}
