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

/// CPython's `PyDateTime_DateTime` (Include/datetime.h), unchanged since
/// Python 3.6: what the `PyDateTime_GET_*` macros read, and what the
/// stable ABI hides behind attribute lookups (about a microsecond per
/// datetime when a batch of 5,000 rows is converted).
#[repr(C)]
struct RawDateTime {
    ob_base: ffi::PyObject,
    hashcode: ffi::Py_hash_t,
    hastzinfo: std::ffi::c_char,
    /// year (2 bytes, big-endian), month, day, hour, minute, second,
    /// microsecond (3 bytes, big-endian).
    data: [u8; 10],
    fold: u8,
    tzinfo: *mut ffi::PyObject,
}

/// An exact `datetime.datetime` that is naive or in `datetime.timezone.utc`
/// (what PostgreSQL's rows hold under Django's `USE_TZ`): its fields
/// `(year, month, day, hour, minute, second, microsecond)`, read from the
/// object itself; None for anything else (a subclass, another zone), which
/// the caller converts through the datetime's attributes.
pub fn utc_or_naive_fields(obj: &Bound<'_, PyAny>) -> Option<(i32, u32, u32, u8, u8, u8, u32)> {
    let api = capi(obj.py())?;
    let ptr = obj.as_ptr();
    // SAFETY: GIL held; the type check makes `ptr` a live
    // `PyDateTime_DateTime`, whose layout is the one above.
    unsafe {
        if ffi::Py_TYPE(ptr) != api.datetime_type {
            return None;
        }
        // field by field through the raw pointer: a naive datetime is
        // allocated without `tzinfo` (read only when `hastzinfo` is set)
        let raw = ptr as *const RawDateTime;
        if (*raw).hastzinfo != 0 {
            let tz = std::ptr::addr_of!((*raw).tzinfo).read();
            if tz != api.timezone_utc && tz != ffi::Py_None() {
                return None;
            }
        }
        let d = std::ptr::addr_of!((*raw).data).read();
        let year = ((d[0] as i32) << 8) | d[1] as i32;
        let us = ((d[7] as u32) << 16) | ((d[8] as u32) << 8) | d[9] as u32;
        Some((year, d[2] as u32, d[3] as u32, d[4], d[5], d[6], us))
    }
}

/// Whether an exact datetime (see [`utc_or_naive_fields`]) is aware, in
/// `datetime.timezone.utc`.
pub fn is_utc(py: Python<'_>, obj: &Bound<'_, PyAny>) -> bool {
    let Some(api) = capi(py) else { return false };
    let ptr = obj.as_ptr();
    // SAFETY: GIL held; as in `utc_or_naive_fields`.
    unsafe {
        if ffi::Py_TYPE(ptr) != api.datetime_type {
            return false;
        }
        let raw = ptr as *const RawDateTime;
        (*raw).hastzinfo != 0 && std::ptr::addr_of!((*raw).tzinfo).read() == api.timezone_utc
    }
}
