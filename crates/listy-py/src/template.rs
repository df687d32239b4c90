//! Objects made from a template `__dict__`: the cheap way to build many
//! instances of one class without running `__init__` or any descriptor.
//!
//! A [`Template`] holds a `__dict__` with every key an instance gets, in the
//! order Django's `__init__` would add them, taken from a real instance of
//! the class: CPython then keeps it as a *split* dict, sharing the class's
//! cached key table. Each object is `PyDict_Copy` of it (one allocation for
//! the values, no key table, no hashing), its values replaced in place, and
//! a bare object (`tp_alloc`, no `__init__`) given that dict. Profiling the
//! former path (`PyDict_New` and one insert per field, `setattr` of
//! `__dict__`) showed most of an instance's cost in growing, then freeing,
//! a per-instance key table.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};

/// A class and the template `__dict__` its objects are copied from.
pub struct Template {
    class: Py<PyType>,
    dict: Py<PyDict>,
    /// The object whose `__dict__` is the template, kept alive: its
    /// finaliser may write to that dict (Django 6's `ModelState.__del__`
    /// reads `fields_cache`, whose descriptor stores a new `{}` there, which
    /// every copy would then share).
    _proto: Py<PyAny>,
}

impl Template {
    /// The template of `class` whose objects have `items` (key, initial
    /// value), in this order.
    pub fn new<'py>(
        py: Python<'py>,
        class: &Py<PyType>,
        items: &[(Bound<'py, PyString>, Bound<'py, PyAny>)],
    ) -> PyResult<Template> {
        // The `__dict__` of an instance made by `object.__new__` shares the
        // class's cached keys (when the class has them): copies of it stay
        // split dicts. (CPython 3.11 gives a `tp_alloc`-only instance a
        // combined dict on `__dict__` access: each copy would then clone,
        // and later free, a key table.)
        let object = py.import("builtins")?.getattr("object")?;
        let proto = object.call_method1(pyo3::intern!(py, "__new__"), (class,))?;
        let dict = proto.getattr(pyo3::intern!(py, "__dict__"))?.cast_into::<PyDict>()?;
        for (key, value) in items {
            dict.set_item(key, value)?;
        }
        Ok(Template { class: class.clone_ref(py), dict: dict.unbind(), _proto: proto.unbind() })
    }

    /// A fresh copy of the template dict, to fill before [`object`](Self::object).
    pub fn dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        // SAFETY: the GIL is held and the template is a live dict;
        // `PyDict_Copy` returns a new reference to a dict or NULL.
        unsafe {
            let copy = ffi::PyDict_Copy(self.dict.as_ptr());
            Ok(Bound::from_owned_ptr_or_err(py, copy)?.cast_into_unchecked())
        }
    }

    /// A bare object of the class with `dict` as its `__dict__`.
    pub fn object<'py>(&self, py: Python<'py>, dict: Bound<'py, PyDict>) -> PyResult<Bound<'py, PyAny>> {
        let obj = allocate(py, &self.class)?;
        // SAFETY: GIL held; `obj` is a live instance of a class with a
        // `__dict__` (a Python class) and `dict` a live dict; the setter
        // takes its own reference and returns -1 with an error set on failure.
        let rc = unsafe { ffi::PyObject_GenericSetDict(obj.as_ptr(), dict.as_ptr(), std::ptr::null_mut()) };
        if rc < 0 {
            return Err(PyErr::fetch(py));
        }
        Ok(obj)
    }
}

/// A bare instance of `cls` (no `__init__`), like `object.__new__(cls)`.
pub fn allocate<'py>(py: Python<'py>, cls: &Py<PyType>) -> PyResult<Bound<'py, PyAny>> {
    let empty = PyTuple::empty(py);
    // SAFETY: `cls` is a live type object and `empty` a live tuple while
    // the GIL is held; `PyType_GenericNew` returns a new reference or NULL.
    unsafe {
        let obj = ffi::PyType_GenericNew(cls.as_ptr().cast(), empty.as_ptr(), std::ptr::null_mut());
        Bound::from_owned_ptr_or_err(py, obj)
    }
}

/// Puts `value` at `key` of `dict` (a fresh template copy), without the
/// conversions of `set_item`.
#[inline]
pub fn put(dict: &Bound<'_, PyDict>, key: &Bound<'_, PyString>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    // SAFETY: GIL held (the bounds prove it); all three are live objects;
    // `PyDict_SetItem` takes its own references.
    if unsafe { ffi::PyDict_SetItem(dict.as_ptr(), key.as_ptr(), value.as_ptr()) } < 0 {
        return Err(PyErr::fetch(dict.py()));
    }
    Ok(())
}
