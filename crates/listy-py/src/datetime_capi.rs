//! Fast construction of `datetime`/`date` objects under the stable ABI.
//!
//! With `abi3`, PyO3 builds datetimes by calling the Python constructor,
//! which costs about a microsecond each: too much when a list of 10,000 rows
//! is turned into instances. CPython's `datetime` module exports its C
//! constructors in the `datetime.datetime_CAPI` capsule, whose layout is
//! append-only since Python 3.7; we read the prefix we need.

use pyo3::ffi;
use pyo3::prelude::*;
use std::ffi::{c_int, CStr};
use std::sync::OnceLock;

#[repr(C)]
struct CapiPrefix {
    date_type: *mut ffi::PyTypeObject,
    datetime_type: *mut ffi::PyTypeObject,
    time_type: *mut ffi::PyTypeObject,
    delta_type: *mut ffi::PyTypeObject,
    tzinfo_type: *mut ffi::PyTypeObject,
    timezone_utc: *mut ffi::PyObject,
    date_from_date: unsafe extern "C" fn(c_int, c_int, c_int, *mut ffi::PyTypeObject) -> *mut ffi::PyObject,
    datetime_from_date_and_time: unsafe extern "C" fn(
        c_int,
        c_int,
        c_int,
        c_int,
        c_int,
        c_int,
        c_int,
        *mut ffi::PyObject,
        *mut ffi::PyTypeObject,
    ) -> *mut ffi::PyObject,
}

/// The capsule's address; the capsule lives as long as the interpreter.
struct Capi(&'static CapiPrefix);

// SAFETY: the capsule is immutable after import and only used with the GIL held.
unsafe impl Send for Capi {}
unsafe impl Sync for Capi {}

static CAPI: OnceLock<Option<Capi>> = OnceLock::new();
const CAPSULE: &CStr = c"datetime.datetime_CAPI";

fn capi(py: Python<'_>) -> Option<&'static CapiPrefix> {
    let _ = py;
    CAPI.get_or_init(|| {
        // SAFETY: called with the GIL held; a null return means the import
        // failed (the error is cleared and we fall back to PyO3's path).
        let ptr = unsafe { ffi::PyCapsule_Import(CAPSULE.as_ptr(), 0) } as *const CapiPrefix;
        if ptr.is_null() {
            unsafe { ffi::PyErr_Clear() };
            return None;
        }
        Some(Capi(unsafe { &*ptr }))
    })
    .as_ref()
    .map(|c| c.0)
}

/// `datetime(y, m, d, h, mi, s, us, tzinfo=UTC if utc else None)`.
#[allow(clippy::too_many_arguments)]
pub fn datetime(
    py: Python<'_>,
    y: i32,
    m: u8,
    d: u8,
    h: u8,
    mi: u8,
    s: u8,
    us: u32,
    utc: bool,
) -> PyResult<Bound<'_, PyAny>> {
    match capi(py) {
        Some(api) => {
            let tz = if utc { api.timezone_utc } else { unsafe { ffi::Py_None() } };
            // SAFETY: GIL held; arguments are plain ints and live objects;
            // the constructor returns a new reference or NULL with an error set.
            unsafe {
                let obj = (api.datetime_from_date_and_time)(
                    y,
                    m as c_int,
                    d as c_int,
                    h as c_int,
                    mi as c_int,
                    s as c_int,
                    us as c_int,
                    tz,
                    api.datetime_type,
                );
                Bound::from_owned_ptr_or_err(py, obj)
            }
        }
        None => {
            let tz = if utc { Some(pyo3::types::PyTzInfo::utc(py)?.to_owned()) } else { None };
            Ok(pyo3::types::PyDateTime::new(py, y, m, d, h, mi, s, us, tz.as_ref())?.into_any())
        }
    }
}

/// `date(y, m, d)`.
pub fn date(py: Python<'_>, y: i32, m: u8, d: u8) -> PyResult<Bound<'_, PyAny>> {
    match capi(py) {
        // SAFETY: as above.
        Some(api) => unsafe {
            Bound::from_owned_ptr_or_err(py, (api.date_from_date)(y, m as c_int, d as c_int, api.date_type))
        },
        None => Ok(pyo3::types::PyDate::new(py, y, m, d)?.into_any()),
    }
}
