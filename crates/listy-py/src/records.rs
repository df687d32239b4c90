//! `Records`: the lazy sequence `ListCache.get()` returns, and the builder
//! that turns one record into a model instance without calling
//! `Model.__init__` (the instance's `__dict__` is filled directly, as
//! `Model.from_db` would leave it).

use crate::convert::to_py;
use crate::errors::DecodeError;
use listy_core::codec::{Layout, ValueRef};
use listy_core::engine::Fetched;
use pyo3::exceptions::PyIndexError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PySlice, PyString, PyTuple, PyType};
use std::sync::{Arc, RwLock};

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
            let obj = ffi::PyType_GenericNew(cls.as_ptr().cast(), empty.as_ptr(), std::ptr::null_mut());
            Bound::from_owned_ptr_or_err(py, obj)
        }
    }

    fn state<'py>(&self, py: Python<'py>, fields_cache: Option<Bound<'py, PyDict>>) -> PyResult<Bound<'py, PyAny>> {
        // Plain attributes (no descriptors on ModelState): CPython keeps them
        // inline without a dict object, one GC-tracked object less per row.
        let state = Self::allocate(py, &self.state_class)?;
        state.setattr(pyo3::intern!(py, "db"), self.db_alias.bind(py))?;
        state.setattr(pyo3::intern!(py, "adding"), false)?;
        if let Some(cache) = fields_cache {
            state.setattr(pyo3::intern!(py, "fields_cache"), cache)?;
        }
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
        let fields_cache = if self.related.is_empty() { None } else { Some(self.related_cache(py, &by_position)?) };
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
            let Some(fk) = by_position[rel.fk_position].as_ref().filter(|v| !v.is_none()) else {
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

/// Pauses CPython's cyclic garbage collector while a batch of instances is
/// built. Each instance allocates several tracked objects, and collections
/// triggered in the middle of a batch re-scan every instance built so far:
/// profiling showed half of a 10,000-row read spent in `gc_collect_main`.
/// The collector is re-enabled (if it was on) when the guard drops.
struct GcPause {
    was_enabled: bool,
}

impl GcPause {
    fn new(_py: Python<'_>) -> GcPause {
        // SAFETY: the GIL is held (the `Python` token proves it).
        GcPause { was_enabled: unsafe { ffi::PyGC_Disable() } != 0 }
    }
}

impl Drop for GcPause {
    fn drop(&mut self) {
        if self.was_enabled {
            // SAFETY: only ever dropped on the thread that holds the GIL.
            unsafe { ffi::PyGC_Enable() };
        }
    }
}

/// Instances an iterator builds at a time (under one `GcPause`).
const ITER_BATCH: usize = 256;

/// How a partially read list fetches the rest of itself.
pub trait Completer: Send + Sync {
    fn complete(&self, py: Python<'_>, partial: &Fetched) -> PyResult<Fetched>;
}

/// A lazy, read-only list of model instances, newest first. A list stored
/// in segments is read head first: the newest records are served from the
/// head, and the segments are fetched (one batched round trip) only when
/// an access goes past it.
#[pyclass(frozen, sequence, module = "listy._native")]
pub struct Records {
    #[pyo3(get)]
    pub key: String,
    #[pyo3(get)]
    pub from_cache: bool,
    content: RwLock<Arc<Fetched>>,
    pub layout: Layout,
    pub builder: Arc<Builder>,
    /// Schema positions fixed by the list key, with their values.
    pub fixed: Vec<(usize, Py<PyAny>)>,
    completer: Box<dyn Completer>,
}

impl Records {
    pub fn new(
        fetched: Fetched,
        layout: Layout,
        builder: Arc<Builder>,
        fixed: Vec<(usize, Py<PyAny>)>,
        completer: Box<dyn Completer>,
    ) -> Records {
        Records {
            key: fetched.key.clone(),
            from_cache: fetched.hit,
            content: RwLock::new(Arc::new(fetched)),
            layout,
            builder,
            fixed,
            completer,
        }
    }

    fn current(&self) -> Arc<Fetched> {
        self.content.read().expect("records poisoned").clone()
    }

    /// The whole list, fetching the segments if they were not read yet.
    fn whole(&self, py: Python<'_>) -> PyResult<Arc<Fetched>> {
        let now = self.current();
        if now.complete {
            return Ok(now);
        }
        let whole = Arc::new(self.completer.complete(py, &now)?);
        *self.content.write().expect("records poisoned") = whole.clone();
        Ok(whole)
    }

    /// The content that holds item `i` (the head if it does).
    fn holding(&self, py: Python<'_>, i: usize) -> PyResult<Arc<Fetched>> {
        let now = self.current();
        if i < now.live.len() {
            Ok(now)
        } else {
            self.whole(py)
        }
    }

    fn decode<'a>(&self, list: &'a Fetched, i: usize, values: &mut Vec<ValueRef<'a>>) -> PyResult<i64> {
        let (p, s, e) = list.live[i];
        values.clear();
        self.layout
            .decode_record(&list.parts[p as usize][s as usize..e as usize], values)
            .map_err(|e| DecodeError::new_err(format!("{e} (list {}); run rebuild() on it", self.key)))
    }

    /// The pk of `value` if it is an instance of this list's model.
    fn pk_of(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<Option<i64>> {
        if !value.is_instance(self.builder.model_class.bind(py))? {
            return Ok(None);
        }
        value.getattr(pyo3::intern!(py, "pk"))?.extract()
    }

    fn instance<'py>(&self, py: Python<'py>, list: &Fetched, i: usize) -> PyResult<Bound<'py, PyAny>> {
        let mut values = Vec::new();
        let pk = self.decode(list, i, &mut values)?;
        self.builder.build(py, &self.layout, pk, &values, &self.fixed)
    }
}

#[pymethods]
impl Records {
    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.whole(py)?.live.len())
    }

    fn __bool__(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(!self.current().live.is_empty() || !self.whole(py)?.live.is_empty())
    }

    /// Bytes stored for this list, all parts (0 when served from the database).
    #[getter]
    fn size(&self, py: Python<'_>) -> PyResult<usize> {
        let whole = self.whole(py)?;
        Ok(if whole.hit || whole.fault.is_none() { whole.parts.iter().map(Vec::len).sum() } else { 0 })
    }

    /// Why the cache was bypassed for this list (a fault kind: `unreachable`,
    /// `protocol`, `too_large`, `contended`, `other`), or None.
    #[getter]
    fn fault(&self) -> Option<&'static str> {
        self.current().fault.as_ref().map(|f| f.kind.name())
    }

    fn __getitem__<'py>(&self, py: Python<'py>, index: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        if let Ok(slice) = index.cast::<PySlice>() {
            let whole_needed = {
                // `[:n]` with n inside the head needs the head only.
                let now = self.current();
                let stop: Option<isize> = slice.getattr("stop")?.extract()?;
                let start: Option<isize> = slice.getattr("start")?.extract()?;
                let step: Option<isize> = slice.getattr("step")?.extract()?;
                !(now.complete
                    || (step.unwrap_or(1) > 0
                        && start.unwrap_or(0) >= 0
                        && matches!(stop, Some(n) if n >= 0 && (n as usize) <= now.live.len())))
            };
            let list = if whole_needed { self.whole(py)? } else { self.current() };
            let ind = slice.indices(list.live.len() as isize)?;
            let _pause = GcPause::new(py);
            let out = PyList::empty(py);
            let mut i = ind.start;
            for _ in 0..ind.slicelength {
                out.append(self.instance(py, &list, i as usize)?)?;
                i += ind.step;
            }
            return Ok(out.into_any());
        }
        let i: isize = index.extract()?;
        let list = if i < 0 { self.whole(py)? } else { self.holding(py, i as usize)? };
        let n = list.live.len() as isize;
        let j = if i < 0 { i + n } else { i };
        if j < 0 || j >= n {
            return Err(PyIndexError::new_err("Records index out of range"));
        }
        self.instance(py, &list, j as usize)
    }

    fn __iter__(slf: Bound<'_, Self>) -> RecordsIter {
        RecordsIter { records: slf.unbind(), next: 0, ready: std::collections::VecDeque::new() }
    }

    /// Rows as tuples in schema order, without model instances.
    fn values<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = self.whole(py)?;
        let n_fields = self.builder.attnames.len();
        let _pause = GcPause::new(py);
        let out = PyList::empty(py);
        let mut values = Vec::new();
        for i in 0..list.live.len() {
            let pk = self.decode(&list, i, &mut values)?;
            let mut row: Vec<Bound<'py, PyAny>> = vec![py.None().into_bound(py); n_fields];
            row[0] = pk.into_pyobject(py)?.into_any();
            for (&pos, v) in self.layout.stored().iter().zip(&values) {
                row[pos] = to_py(py, *v, self.builder.aware)?;
            }
            for (pos, v) in &self.fixed {
                row[*pos] = v.bind(py).clone();
            }
            out.append(PyTuple::new(py, row)?)?;
        }
        Ok(out)
    }

    /// The primary keys, newest first.
    fn pks(&self, py: Python<'_>) -> PyResult<Vec<i64>> {
        let list = self.whole(py)?;
        let mut values = Vec::new();
        (0..list.live.len()).map(|i| self.decode(&list, i, &mut values)).collect()
    }

    /// `Sequence.index`: the position of `value` (an instance of the
    /// model, compared by primary key as Django compares instances).
    fn index(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<usize> {
        let pk = self.pk_of(py, value)?;
        self.pks(py)?
            .iter()
            .position(|p| Some(*p) == pk)
            .ok_or_else(|| pyo3::exceptions::PyValueError::new_err("the instance is not in this list"))
    }

    /// `Sequence.count`: 1 if `value` (an instance of the model) is listed, else 0.
    fn count(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<usize> {
        let pk = self.pk_of(py, value)?;
        Ok(self.pks(py)?.iter().filter(|p| Some(**p) == pk).count())
    }

    fn __contains__(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.count(py, value)? > 0)
    }

    /// True when the list was read from the cache.
    #[getter]
    fn complete(&self) -> bool {
        self.current().complete
    }

    fn __repr__(&self) -> String {
        let now = self.current();
        let more = if now.complete { "" } else { "+" };
        format!("<Records {}{more} items of {}>", now.live.len(), self.key)
    }
}

#[pyclass(module = "listy._native")]
pub struct RecordsIter {
    records: Py<Records>,
    next: usize,
    /// Instances built ahead, in batches.
    ready: std::collections::VecDeque<Py<PyAny>>,
}

#[pymethods]
impl RecordsIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        if self.ready.is_empty() {
            let records = self.records.get();
            let list = records.holding(py, self.next)?;
            // Batches grow from 8 to ITER_BATCH: `next(iter(records))` and
            // loops that stop early do not pay for instances they never see.
            let batch = self.next.clamp(8, ITER_BATCH);
            let end = list.live.len().min(self.next + batch);
            let _pause = GcPause::new(py);
            for i in self.next..end {
                self.ready.push_back(records.instance(py, &list, i)?.unbind());
            }
            self.next = end;
        }
        Ok(self.ready.pop_front().map(|o| o.into_bound(py)))
    }
}
