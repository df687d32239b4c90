//! `Records`: the lazy sequence `ListCache.get()` returns, and the builder
//! that turns one record into a model instance without calling
//! `Model.__init__` (the instance's `__dict__` is filled directly, as
//! `Model.from_db` would leave it).

use crate::convert::to_py;
use crate::errors::{CoreError, DecodeError};
use listy_core::codec::{Layout, ValueRef};
use pyo3::exceptions::PyIndexError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PySlice, PyString, PyTuple, PyType};

/// An inlined foreign key: the related instance is built from the record.
pub struct Related {
    /// Schema positions of the inlined fields and their related attnames.
    pub fields: Vec<(usize, Py<PyString>)>,
    /// Schema position of the FK attname (`entry_id`).
    pub fk_position: usize,
    /// The FK field's name (`entry`): the key in `_state.fields_cache`.
    pub field_name: Py<PyString>,
    pub class: Py<PyType>,
    pub pk_attname: Py<PyString>,
}

/// How records become instances of one model.
pub struct Builder {
    pub model_class: Py<PyType>,
    pub state_class: Py<PyType>,
    pub db_alias: Py<PyString>,
    /// Attnames in schema order (inlined fields have `None`).
    pub attnames: Vec<Option<Py<PyString>>>,
    pub related: Vec<Related>,
    pub on_build: Option<Py<PyAny>>,
    pub aware: bool,
}

impl Builder {
    /// A bare instance of `cls` (no `__init__`), like `object.__new__(cls)`.
    fn allocate<'py>(py: Python<'py>, cls: &Py<PyType>) -> PyResult<Bound<'py, PyAny>> {
        let empty = PyTuple::empty(py);
        // SAFETY: `cls` is a live type object and `empty` a live tuple while
        // the GIL is held; `PyType_GenericNew` returns a new reference or NULL.
        unsafe {
            let obj =
                ffi::PyType_GenericNew(cls.as_ptr().cast(), empty.as_ptr(), std::ptr::null_mut());
            Bound::from_owned_ptr_or_err(py, obj)
        }
    }

    fn state<'py>(
        &self,
        py: Python<'py>,
        fields_cache: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let state = Self::allocate(py, &self.state_class)?;
        let d = PyDict::new(py);
        d.set_item(pyo3::intern!(py, "db"), self.db_alias.bind(py))?;
        d.set_item(pyo3::intern!(py, "adding"), false)?;
        if let Some(cache) = fields_cache {
            d.set_item(pyo3::intern!(py, "fields_cache"), cache)?;
        }
        state.setattr(pyo3::intern!(py, "__dict__"), d)?;
        Ok(state)
    }

    /// Builds one instance from a record's values (`stored` positions of the
    /// layout) and the list's fixed key values.
    pub fn build<'py>(
        &self,
        py: Python<'py>,
        layout: &Layout,
        pk: i64,
        values: &[ValueRef<'_>],
        fixed: &[(usize, Py<PyAny>)],
    ) -> PyResult<Bound<'py, PyAny>> {
        let d = PyDict::new(py);
        let mut by_position: Vec<Option<Bound<'py, PyAny>>> = Vec::new();
        if !self.related.is_empty() {
            by_position.resize(self.attnames.len(), None);
        }
        let pk_obj = pk.into_pyobject(py)?.into_any();
        if let Some(name) = &self.attnames[0] {
            d.set_item(name.bind(py), &pk_obj)?;
        }
        for (&pos, value) in layout.stored().iter().zip(values) {
            let obj = to_py(py, *value, self.aware)?;
            if let Some(name) = &self.attnames[pos] {
                d.set_item(name.bind(py), &obj)?;
            }
            if !by_position.is_empty() {
                by_position[pos] = Some(obj);
            }
        }
        for (pos, value) in fixed {
            if let Some(name) = &self.attnames[*pos] {
                d.set_item(name.bind(py), value.bind(py))?;
            }
            if !by_position.is_empty() {
                by_position[*pos] = Some(value.bind(py).clone());
            }
        }
        let fields_cache = if self.related.is_empty() {
            None
        } else {
            Some(self.related_cache(py, &by_position)?)
        };
        d.set_item(pyo3::intern!(py, "_state"), self.state(py, fields_cache)?)?;
        let obj = Self::allocate(py, &self.model_class)?;
        obj.setattr(pyo3::intern!(py, "__dict__"), d)?;
        match &self.on_build {
            Some(hook) => hook.bind(py).call1((obj,)),
            None => Ok(obj),
        }
    }

    /// `_state.fields_cache` with the inlined related instances: only the
    /// inlined fields are set, so Django loads the others on first access.
    fn related_cache<'py>(
        &self,
        py: Python<'py>,
        by_position: &[Option<Bound<'py, PyAny>>],
    ) -> PyResult<Bound<'py, PyDict>> {
        let cache = PyDict::new(py);
        for rel in &self.related {
            let Some(fk) = by_position[rel.fk_position]
                .as_ref()
                .filter(|v| !v.is_none())
            else {
                continue;
            };
            let d = PyDict::new(py);
            d.set_item(rel.pk_attname.bind(py), fk)?;
            for (pos, attname) in &rel.fields {
                if let Some(v) = &by_position[*pos] {
                    d.set_item(attname.bind(py), v)?;
                }
            }
            d.set_item(pyo3::intern!(py, "_state"), self.state(py, None)?)?;
            let obj = Self::allocate(py, &rel.class)?;
            obj.setattr(pyo3::intern!(py, "__dict__"), d)?;
            cache.set_item(rel.field_name.bind(py), obj)?;
        }
        Ok(cache)
    }
}

/// A lazy, read-only list of model instances, newest first.
#[pyclass(frozen, sequence, module = "listy._native")]
pub struct Records {
    #[pyo3(get)]
    pub key: String,
    #[pyo3(get)]
    pub size: usize,
    #[pyo3(get)]
    pub from_cache: bool,
    pub bytes: Vec<u8>,
    pub ranges: Vec<(u32, u32)>,
    pub layout: Layout,
    pub builder: std::sync::Arc<Builder>,
    /// Schema positions fixed by the list key, with their values.
    pub fixed: Vec<(usize, Py<PyAny>)>,
}

impl Records {
    pub fn new(
        key: String,
        bytes: Vec<u8>,
        from_cache: bool,
        layout: Layout,
        builder: std::sync::Arc<Builder>,
        fixed: Vec<(usize, Py<PyAny>)>,
    ) -> PyResult<Records> {
        let ranges = layout.read(&bytes).map_err(CoreError)?.ranges().to_vec();
        let size = if from_cache { bytes.len() } else { 0 };
        Ok(Records {
            key,
            size,
            from_cache,
            bytes,
            ranges,
            layout,
            builder,
            fixed,
        })
    }

    fn decode<'a>(&'a self, i: usize, values: &mut Vec<ValueRef<'a>>) -> PyResult<i64> {
        let (s, e) = self.ranges[i];
        values.clear();
        self.layout
            .decode_record(&self.bytes[s as usize..e as usize], values)
            .map_err(|e| DecodeError::new_err(format!("{e} (list {})", self.key)))
    }

    fn instance<'py>(&self, py: Python<'py>, i: usize) -> PyResult<Bound<'py, PyAny>> {
        let mut values = Vec::new();
        let pk = self.decode(i, &mut values)?;
        self.builder
            .build(py, &self.layout, pk, &values, &self.fixed)
    }

    fn index(&self, i: isize) -> PyResult<usize> {
        let n = self.ranges.len() as isize;
        let j = if i < 0 { i + n } else { i };
        if j < 0 || j >= n {
            return Err(PyIndexError::new_err("Records index out of range"));
        }
        Ok(j as usize)
    }
}

#[pymethods]
impl Records {
    fn __len__(&self) -> usize {
        self.ranges.len()
    }

    fn __bool__(&self) -> bool {
        !self.ranges.is_empty()
    }

    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        index: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if let Ok(slice) = index.cast::<PySlice>() {
            let ind = slice.indices(self.ranges.len() as isize)?;
            let list = PyList::empty(py);
            let mut i = ind.start;
            for _ in 0..ind.slicelength {
                list.append(self.instance(py, i as usize)?)?;
                i += ind.step;
            }
            return Ok(list.into_any());
        }
        let i: isize = index.extract()?;
        self.instance(py, self.index(i)?)
    }

    fn __iter__(slf: Bound<'_, Self>) -> RecordsIter {
        RecordsIter {
            records: slf.unbind(),
            next: 0,
        }
    }

    /// Rows as tuples in schema order, without model instances.
    fn values<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let n_fields = self.builder.attnames.len();
        let list = PyList::empty(py);
        let mut values = Vec::new();
        for i in 0..self.ranges.len() {
            let pk = self.decode(i, &mut values)?;
            let mut row: Vec<Bound<'py, PyAny>> = vec![py.None().into_bound(py); n_fields];
            row[0] = pk.into_pyobject(py)?.into_any();
            for (&pos, v) in self.layout.stored().iter().zip(&values) {
                row[pos] = to_py(py, *v, self.builder.aware)?;
            }
            for (pos, v) in &self.fixed {
                row[*pos] = v.bind(py).clone();
            }
            list.append(PyTuple::new(py, row)?)?;
        }
        Ok(list)
    }

    /// The primary keys, newest first.
    fn pks(&self) -> PyResult<Vec<i64>> {
        let mut values = Vec::new();
        (0..self.ranges.len())
            .map(|i| self.decode(i, &mut values))
            .collect()
    }

    fn __repr__(&self) -> String {
        format!("<Records {} items of {}>", self.ranges.len(), self.key)
    }
}

#[pyclass(module = "listy._native")]
pub struct RecordsIter {
    records: Py<Records>,
    next: usize,
}

#[pymethods]
impl RecordsIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let records = self.records.get();
        if self.next >= records.ranges.len() {
            return Ok(None);
        }
        self.next += 1;
        records.instance(py, self.next - 1).map(Some)
    }
}
