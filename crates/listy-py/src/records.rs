//! The instance builder: `Builder` turns a record (or a database row, when
//! the cache is not used) into a model instance without calling
//! `Model.__init__` (the instance's `__dict__` is filled directly, as
//! `Model.from_db` would leave it); `Records`, the lazy sequence
//! `ListCache.get()` returns, is the core's head-first reader
//! (`listy_core::reader`) behind Python's sequence protocol, building
//! instances with it.

use crate::convert::to_py;
use crate::engine::ListCompleter;
use crate::errors::ConfigError;
use crate::template::{put, Template};
use listy_core::codec::{Layout, ValueRef};
use listy_core::engine::Fetched;
use listy_core::reader::{List, Span};
use pyo3::exceptions::PyIndexError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyList, PySlice, PyString, PyTuple, PyType};
use std::sync::Arc;

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
    /// Attnames in schema order (inlined fields have `None`), interned.
    pub attnames: Vec<Option<Py<PyString>>>,
    pub related: Vec<Related>,
    pub on_build: Option<Py<PyAny>>,
    pub aware: bool,
    /// The dict templates, made on first use (the model class must be
    /// ready to make a bare instance of it).
    pub templates: PyOnceLock<Templates>,
}

/// The templates instances are copied from (see `crate::template`).
pub struct Templates {
    /// The model's `__dict__`: `_state`, then every attname (None).
    instance: Template,
    /// `ModelState`'s: `db` (the alias), `adding` (False), as `from_db` leaves it.
    state: Template,
    /// Each inlined related model's: `_state`, its pk and inlined fields.
    related: Vec<Template>,
    state_key: Py<PyString>,
}

impl Builder {
    fn templates(&self, py: Python<'_>) -> PyResult<&Templates> {
        self.templates.get_or_try_init(py, || {
            let none = || py.None().into_bound(py);
            let state_key = pyo3::intern!(py, "_state").clone();
            let mut items = vec![(state_key.clone(), none())];
            items.extend(self.attnames.iter().flatten().map(|a| (a.bind(py).clone(), none())));
            let instance = Template::new(py, &self.model_class, &items)?;
            let state_items = [
                (pyo3::intern!(py, "db").clone(), self.db_alias.bind(py).clone().into_any()),
                (pyo3::intern!(py, "adding").clone(), PyBool::new(py, false).to_owned().into_any()),
            ];
            let state = Template::new(py, &self.state_class, &state_items)?;
            let related = self
                .related
                .iter()
                .map(|rel| {
                    let mut items = vec![(state_key.clone(), none()), (rel.pk_attname.bind(py).clone(), none())];
                    items.extend(rel.fields.iter().map(|(_, a)| (a.bind(py).clone(), none())));
                    Template::new(py, &rel.class, &items)
                })
                .collect::<PyResult<_>>()?;
            Ok::<_, PyErr>(Templates { instance, state, related, state_key: state_key.unbind() })
        })
    }

    /// A `ModelState` as `Model.from_db` leaves it (`db` set, `adding`
    /// False), with the inlined related instances if any.
    fn state<'py>(
        &self,
        py: Python<'py>,
        t: &Templates,
        fields_cache: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let dict = t.state.dict(py)?;
        if let Some(cache) = fields_cache {
            put(&dict, pyo3::intern!(py, "fields_cache"), &cache)?;
        }
        t.state.object(py, dict)
    }

    /// Builds one instance from a record's values (`stored` positions of the
    /// layout) and the list's fixed key values.
    pub fn record_instance<'py>(
        &self,
        py: Python<'py>,
        layout: &Layout,
        pk: i64,
        values: &[ValueRef<'_>],
        fixed: &[(usize, Py<PyAny>)],
    ) -> PyResult<Bound<'py, PyAny>> {
        let t = self.templates(py)?;
        let mut fields = self.fields(py, t)?;
        fields.put(0, &pk.into_pyobject(py)?.into_any())?;
        for (&pos, value) in layout.stored().iter().zip(values) {
            fields.put(pos, &to_py(py, *value, self.aware)?)?;
        }
        for (pos, value) in fixed {
            fields.put(*pos, value.bind(py))?;
        }
        self.finish(py, t, fields)
    }

    /// One row as a tuple in schema order (`.values()`), from a record's
    /// values and the list's fixed key values.
    pub fn record_tuple<'py>(
        &self,
        py: Python<'py>,
        layout: &Layout,
        pk: i64,
        values: &[ValueRef<'_>],
        fixed: &[(usize, Py<PyAny>)],
    ) -> PyResult<Bound<'py, PyTuple>> {
        let n = self.attnames.len();
        // SAFETY: GIL held; `PyTuple_New` returns a new tuple of `n` NULL
        // slots (or NULL with an error set). Every slot is filled below
        // before the tuple is handed out, each with a new reference the
        // tuple steals: pk at 0, then `stored` and the fixed positions
        // (which cover 1..n for a layout of this schema; any slot left NULL
        // is filled with None rather than handed out NULL).
        unsafe {
            let tuple = Bound::from_owned_ptr_or_err(py, ffi::PyTuple_New(n as ffi::Py_ssize_t))?;
            let t = tuple.as_ptr();
            // Counts the slots filled for the first time.
            let set = |pos: usize, value: Bound<'py, PyAny>| -> usize {
                let first = ffi::PyTuple_GetItem(t, pos as ffi::Py_ssize_t).is_null();
                ffi::PyTuple_SetItem(t, pos as ffi::Py_ssize_t, value.into_ptr());
                first as usize
            };
            let mut filled = set(0, pk.into_pyobject(py)?.into_any());
            for (&pos, value) in layout.stored().iter().zip(values) {
                filled += set(pos, to_py(py, *value, self.aware)?);
            }
            for (pos, value) in fixed {
                filled += set(*pos, value.bind(py).clone());
            }
            if filled < n {
                for pos in 0..n {
                    if ffi::PyTuple_GetItem(t, pos as ffi::Py_ssize_t).is_null() {
                        set(pos, py.None().into_bound(py));
                    }
                }
            }
            Ok(tuple.cast_into_unchecked())
        }
    }

    /// Builds one instance from a row in schema order, as a loader returns
    /// it (the database's values, used as they are).
    pub fn row_instance<'py>(&self, py: Python<'py>, row: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let n = row.len()?;
        if n != self.attnames.len() {
            return Err(ConfigError::new_err(format!("a row of {n} values for a schema of {}", self.attnames.len())));
        }
        let t = self.templates(py)?;
        let mut fields = self.fields(py, t)?;
        for (pos, value) in row.try_iter()?.enumerate() {
            fields.put(pos, &value?)?;
        }
        self.finish(py, t, fields)
    }

    /// Instances from rows in schema order (see `row_instance`).
    pub fn instances<'py>(&self, py: Python<'py>, rows: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
        let _pause = GcPause::new(py);
        let out = PyList::empty(py);
        for row in rows.try_iter()? {
            out.append(self.row_instance(py, &row?)?)?;
        }
        Ok(out)
    }

    /// A fresh instance `__dict__` (a copy of the template) to fill.
    fn fields<'a, 'py>(&'a self, py: Python<'py>, t: &Templates) -> PyResult<Fields<'a, 'py>> {
        let mut by_position = Vec::new();
        if !self.related.is_empty() {
            by_position.resize(self.attnames.len(), None);
        }
        Ok(Fields { py, attnames: &self.attnames, dict: t.instance.dict(py)?, by_position })
    }

    /// The instance of filled `fields`: `_state` (with the inlined related
    /// instances), the bare object, the `on_build` hook.
    fn finish<'py>(&self, py: Python<'py>, t: &Templates, fields: Fields<'_, 'py>) -> PyResult<Bound<'py, PyAny>> {
        let Fields { dict, by_position, .. } = fields;
        let fields_cache =
            if self.related.is_empty() { None } else { Some(self.related_cache(py, t, &by_position)?) };
        put(&dict, t.state_key.bind(py), &self.state(py, t, fields_cache)?)?;
        let obj = t.instance.object(py, dict)?;
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
        t: &Templates,
        by_position: &[Option<Bound<'py, PyAny>>],
    ) -> PyResult<Bound<'py, PyDict>> {
        let cache = PyDict::new(py);
        for (rel, template) in self.related.iter().zip(&t.related) {
            let Some(fk) = by_position[rel.fk_position].as_ref().filter(|v| !v.is_none()) else {
                continue;
            };
            let d = template.dict(py)?;
            put(&d, rel.pk_attname.bind(py), fk)?;
            for (pos, attname) in &rel.fields {
                if let Some(v) = &by_position[*pos] {
                    put(&d, attname.bind(py), v)?;
                }
            }
            put(&d, t.state_key.bind(py), &self.state(py, t, None)?)?;
            cache.set_item(rel.field_name.bind(py), template.object(py, d)?)?;
        }
        Ok(cache)
    }
}

/// The `__dict__` of an instance being built, filled by schema position.
struct Fields<'a, 'py> {
    py: Python<'py>,
    attnames: &'a [Option<Py<PyString>>],
    dict: Bound<'py, PyDict>,
    /// Values by schema position, kept only when inlined related instances
    /// are built from them.
    by_position: Vec<Option<Bound<'py, PyAny>>>,
}

impl<'py> Fields<'_, 'py> {
    fn put(&mut self, pos: usize, value: &Bound<'py, PyAny>) -> PyResult<()> {
        if let Some(name) = &self.attnames[pos] {
            put(&self.dict, name.bind(self.py), value)?;
        }
        if !self.by_position.is_empty() {
            self.by_position[pos] = Some(value.clone());
        }
        Ok(())
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

/// A lazy, read-only list of model instances, newest first: the core's
/// head-first reader (`listy_core::reader::List`) behind Python's sequence
/// protocol. Each access decodes the records it needs and builds their
/// instances; the segments are fetched only when an access goes past the
/// head.
#[pyclass(frozen, sequence, module = "listy._native")]
pub struct Records {
    list: List<ListCompleter>,
    builder: Arc<Builder>,
    /// Schema positions fixed by the list key, with their Python values.
    fixed: Vec<(usize, Py<PyAny>)>,
}

impl Records {
    pub fn new(list: List<ListCompleter>, builder: Arc<Builder>, fixed: Vec<(usize, Py<PyAny>)>) -> Records {
        Records { list, builder, fixed }
    }

    /// The pk of `value` if it is an instance of this list's model.
    fn pk_of(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<Option<i64>> {
        if !value.is_instance(self.builder.model_class.bind(py))? {
            return Ok(None);
        }
        value.getattr(pyo3::intern!(py, "pk"))?.extract()
    }

    /// A keyset page (see `after`), built into a list.
    fn keyset<'py>(&self, py: Python<'py>, pk: Option<i64>, limit: usize, after: bool) -> PyResult<Bound<'py, PyList>> {
        let span = self.list.keyset(pk, limit, after)?;
        let out = PyList::empty(py);
        self.build_range(py, &span.content, (0, 1, span.content.live.len() as isize), |o| out.append(o))?;
        Ok(out)
    }

    /// The instances of records `start, start + step, ...` (`n` of them) of
    /// `content`, decoded into one reused buffer, appended to `out`.
    fn build_range<'py>(
        &self,
        py: Python<'py>,
        content: &Fetched,
        (start, step, n): (isize, isize, isize),
        mut out: impl FnMut(Bound<'py, PyAny>) -> PyResult<()>,
    ) -> PyResult<()> {
        let _pause = GcPause::new(py);
        let mut values = Vec::with_capacity(self.list.layout().stored().len());
        let mut i = start;
        for _ in 0..n {
            let pk = self.list.decode(content, i as usize, &mut values)?;
            out(self.builder.record_instance(py, self.list.layout(), pk, &values, &self.fixed)?)?;
            i += step;
        }
        Ok(())
    }
}

/// `(start, stop, step)` of a slice as `PySlice_Unpack` gives them (an
/// omitted bound is `isize::MAX` or `isize::MIN` by the step's sign; a zero
/// step raises `ValueError`).
fn unpack_slice(slice: &Bound<'_, PySlice>) -> PyResult<(isize, isize, isize)> {
    let (mut start, mut stop, mut step) = (0, 0, 0);
    // SAFETY: GIL held, `slice` a live slice object, three valid outputs.
    if unsafe { ffi::PySlice_Unpack(slice.as_ptr(), &mut start, &mut stop, &mut step) } < 0 {
        return Err(PyErr::fetch(slice.py()));
    }
    Ok((start, stop, step))
}

/// The unpacked slice clipped to a sequence of `len` items, as
/// `slice.indices(len)`: `(start, stop, step, slice length)`.
fn adjust_slice(len: isize, (mut start, mut stop, step): (isize, isize, isize)) -> (isize, isize, isize, isize) {
    // SAFETY: plain arithmetic on the given values (no object involved).
    let n = unsafe { ffi::PySlice_AdjustIndices(len, &mut start, &mut stop, step) };
    (start, stop, step, n)
}

#[pymethods]
impl Records {
    /// The list's key (its head's).
    #[getter]
    fn key(&self) -> &str {
        self.list.key()
    }

    /// True when the list was read from the cache.
    #[getter(from_cache)]
    fn hit(&self) -> bool {
        self.list.from_cache()
    }

    fn __len__(&self) -> PyResult<usize> {
        Ok(self.list.len()?)
    }

    fn __bool__(&self) -> PyResult<bool> {
        Ok(!self.list.is_empty()?)
    }

    /// Bytes stored for this list, all parts (0 when served from the database).
    #[getter]
    fn size(&self) -> PyResult<usize> {
        Ok(self.list.size()?)
    }

    /// Why the cache was bypassed for this list (a fault kind: `unreachable`,
    /// `protocol`, `too_large`, `contended`, `other`), or None.
    #[getter]
    fn fault(&self) -> Option<&'static str> {
        self.list.current().fault.as_ref().map(|f| f.kind.name())
    }

    fn __getitem__<'py>(&self, py: Python<'py>, index: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        if let Ok(slice) = index.cast::<PySlice>() {
            let (start, stop, step) = unpack_slice(slice)?;
            // `[i:n]` needs records i..n only: the head, or the segments
            // they are in (a list in segments is never read whole for it).
            // An omitted stop unpacks as `isize::MAX`: the whole list.
            let span = if step > 0 && start >= 0 && (0..isize::MAX).contains(&stop) {
                self.list.span(start as usize, stop as usize)?
            } else {
                Span { content: self.list.whole()?, first: 0 }
            };
            // Indices over the list as far as the span reaches.
            let (start, _, step, n) = adjust_slice(span.end() as isize, (start, stop, step));
            let local = (start - span.first as isize, step, n);
            if n > 0 && local.0 < 0 {
                return Err(PyIndexError::new_err("Records slice out of the span read"));
            }
            // SAFETY: GIL held; a list of `n` NULL slots, each filled
            // below (or the list dropped on error) with a new reference
            // the list steals.
            let out = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyList_New(n))? };
            let mut at = 0;
            self.build_range(py, &span.content, local, |o| {
                unsafe { ffi::PyList_SetItem(out.as_ptr(), at, o.into_ptr()) };
                at += 1;
                Ok(())
            })?;
            return Ok(out);
        }
        let i: isize = index.extract()?;
        let span = if i < 0 {
            Span { content: self.list.whole()?, first: 0 }
        } else {
            self.list.span(i as usize, i as usize + 1)?
        };
        let j = if i < 0 { i + span.end() as isize } else { i };
        if j < 0 || !span.holds(j as usize) {
            return Err(PyIndexError::new_err("Records index out of range"));
        }
        let (content, j) = (&span.content, j as usize - span.first);
        let mut values = Vec::new();
        let pk = self.list.decode(content, j, &mut values)?;
        self.builder.record_instance(py, self.list.layout(), pk, &values, &self.fixed)
    }

    fn __iter__(slf: Bound<'_, Self>) -> RecordsIter {
        RecordsIter { records: slf.unbind(), next: 0, span: None, ready: std::collections::VecDeque::new() }
    }

    /// A keyset page: up to `limit` instances whose pk is below `pk` (from
    /// the top when None), largest pk first, as the ORM's
    /// `filter(pk__lt=pk).order_by("-pk")[:limit]`.
    #[pyo3(signature = (pk, limit = 20))]
    fn after<'py>(&self, py: Python<'py>, pk: Option<i64>, limit: usize) -> PyResult<Bound<'py, PyList>> {
        self.keyset(py, pk, limit, true)
    }

    /// The keyset page before `pk`: the `limit` instances with the smallest
    /// pks above it, largest pk first (the page a reverse cursor shows).
    #[pyo3(signature = (pk, limit = 20))]
    fn before<'py>(&self, py: Python<'py>, pk: Option<i64>, limit: usize) -> PyResult<Bound<'py, PyList>> {
        self.keyset(py, pk, limit, false)
    }

    /// Rows as tuples in schema order, without model instances.
    fn values<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = self.list.whole()?;
        let n = list.live.len();
        let _pause = GcPause::new(py);
        // SAFETY: GIL held; a list of `n` NULL slots, each filled below
        // (the loop runs `n` times or returns an error, dropping the list)
        // with a new reference the list steals.
        let out = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyList_New(n as ffi::Py_ssize_t))? };
        let mut values = Vec::with_capacity(self.list.layout().stored().len());
        for i in 0..n {
            let pk = self.list.decode(&list, i, &mut values)?;
            let row = self.builder.record_tuple(py, self.list.layout(), pk, &values, &self.fixed)?;
            unsafe { ffi::PyList_SetItem(out.as_ptr(), i as ffi::Py_ssize_t, row.into_ptr()) };
        }
        Ok(unsafe { out.cast_into_unchecked() })
    }

    /// The primary keys, newest first.
    fn pks(&self) -> PyResult<Vec<i64>> {
        Ok(self.list.pks()?)
    }

    /// `Sequence.index`: the position of `value` (an instance of the
    /// model, compared by primary key as Django compares instances).
    fn index(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<usize> {
        let pk = self.pk_of(py, value)?;
        self.pks()?
            .iter()
            .position(|p| Some(*p) == pk)
            .ok_or_else(|| pyo3::exceptions::PyValueError::new_err("the instance is not in this list"))
    }

    /// `Sequence.count`: 1 if `value` (an instance of the model) is listed, else 0.
    fn count(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<usize> {
        let pk = self.pk_of(py, value)?;
        Ok(self.pks()?.iter().filter(|p| Some(**p) == pk).count())
    }

    fn __contains__(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.count(py, value)? > 0)
    }

    /// True once every segment of the list has been read.
    #[getter]
    fn complete(&self) -> bool {
        self.list.is_complete()
    }

    fn __repr__(&self) -> String {
        let now = self.list.current();
        let more = if now.complete { "" } else { "+" };
        format!("<Records {}{more} items of {}>", now.live.len(), self.list.key())
    }
}

#[pyclass(module = "listy._native")]
pub struct RecordsIter {
    records: Py<Records>,
    next: usize,
    /// The part of the list being iterated: the head, or one segment (a
    /// list in segments is read one at a time, so memory stays flat).
    span: Option<Span>,
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
            if !self.span.as_ref().is_some_and(|s| s.holds(self.next)) {
                self.span = Some(records.list.span(self.next, self.next + 1)?);
            }
            let span = self.span.as_ref().expect("span read");
            // Batches grow from 8 to ITER_BATCH: `next(iter(records))` and
            // loops that stop early do not pay for instances they never see.
            let batch = self.next.clamp(8, ITER_BATCH);
            let end = span.end().min(self.next + batch);
            let local = ((self.next - span.first.min(self.next)) as isize, 1, end.saturating_sub(self.next) as isize);
            records.build_range(py, &span.content, local, |o| {
                self.ready.push_back(o.unbind());
                Ok(())
            })?;
            self.next = end.max(self.next);
        }
        Ok(self.ready.pop_front().map(|o| o.into_bound(py)))
    }
}
