//! The lazy, head-first reader of one cached list: what a program iterates.
//!
//! [`Engine::get_multi`] with `complete = false` hands back a list stored in
//! segments as its head only (the newest records, one round trip). A
//! [`List`] wraps that [`Fetched`] and serves records from it; the first
//! access that goes past the head (an index beyond it, `len`, the whole
//! iteration) completes the list once, through its [`Completion`] (for an
//! engine: [`Engine::complete_list`], one batched round trip for the
//! segments), and every later access reads the complete list.
//!
//! Records are decoded one at a time, on access, borrowing the list's bytes:
//! [`List::decode`] fills a caller's buffer of [`ValueRef`]s without
//! copying a value (the bindings build objects from it), [`List::get`] and
//! [`List::rows`] hand out owned [`Row`]s in schema order (the fields the
//! list's key fixes filled in from the key).
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use listy_core::codec::Value;
//! # use listy_core::engine::{Engine, Source};
//! # use listy_core::reader::List;
//! # fn demo(engine: Arc<Engine>, db: &impl Source) -> listy_core::Result<()> {
//! let follows = List::read(engine, &["follower_id"], &[Value::Int(7)], db)?;
//! let newest = follows.get(0)?; // served from the head
//! for row in follows.rows().take(50) {
//!     let row = row?; // completes the list if the head runs out
//!     println!("{row:?}");
//! }
//! # Ok(()) }
//! ```

use crate::codec::{Layout, Row, Value, ValueRef};
use crate::engine::{Engine, Fetched, Source};
use crate::error::{Error, Result};
use std::ops::Deref;
use std::sync::{Arc, RwLock};

/// How a list read head first fetches the rest of itself.
pub trait Completion {
    /// The error a completion can end with; a codec error (an undecodable
    /// record) converts into it, so every access of a [`List`] returns it.
    type Error: From<Error>;

    /// The whole list `partial` is the head of (complete: every segment).
    fn complete(&self, partial: &Fetched) -> std::result::Result<Fetched, Self::Error>;
}

/// Completes a list through the engine that read it, calling `source` when
/// the segments are gone and the list must be read again. `S` is any
/// pointer to a [`Source`]: `&db`, `Arc<Db>`, `Box<Db>`.
pub struct EngineCompletion<S> {
    engine: Arc<Engine>,
    fields: Vec<String>,
    values: Vec<Value>,
    source: S,
}

impl<S> EngineCompletion<S>
where
    S: Deref,
    S::Target: Source + Sized,
{
    /// The completion of the list `fields` = `values` (sorted field names,
    /// as the engine names lists).
    pub fn new(engine: Arc<Engine>, fields: Vec<String>, values: Vec<Value>, source: S) -> Self {
        EngineCompletion { engine, fields, values, source }
    }

    /// The source rows are read from when the list is built again.
    pub fn source(&self) -> &S {
        &self.source
    }
}

impl<S> Completion for EngineCompletion<S>
where
    S: Deref,
    S::Target: Source + Sized,
{
    type Error = Error;

    fn complete(&self, partial: &Fetched) -> Result<Fetched> {
        self.engine.complete_list(&self.fields, &self.values, partial, &*self.source)
    }
}

/// One list, newest first, read head first and completed on demand.
///
/// A `List` is `Sync` when its completion is: threads may share it; two
/// that go past the head at once both complete it, and either result serves.
pub struct List<C> {
    key: String,
    from_cache: bool,
    /// What has been read so far: the head, or the complete list. Swapped
    /// (never mutated) so that a reader keeps the bytes it decodes from.
    content: RwLock<Arc<Fetched>>,
    layout: Layout,
    fixed: Vec<(usize, Value)>,
    completion: C,
}

impl<S> List<EngineCompletion<S>>
where
    S: Deref,
    S::Target: Source + Sized,
{
    /// Reads the list of `engine` whose fields `fields` hold `values`
    /// (in any order), head first: one round trip on a hit; on a miss the
    /// engine builds the list from `source` (`&db`, `Arc<Db>`, ...) under
    /// its lease.
    pub fn read(engine: Arc<Engine>, fields: &[&str], values: &[Value], source: S) -> Result<Self> {
        if fields.len() != values.len() {
            return Err(Error::Config(format!("{} values for the {} fields {fields:?}", values.len(), fields.len())));
        }
        let mut pairs: Vec<(String, Value)> =
            fields.iter().map(|f| f.to_string()).zip(values.iter().cloned()).collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let (fields, values): (Vec<String>, Vec<Value>) = pairs.into_iter().unzip();
        let layout = engine.layout(&fields)?;
        let fixed = fields
            .iter()
            .zip(&values)
            .map(|(f, v)| (layout.schema().position(f).expect("the layout has the field"), v.clone()))
            .collect();
        let request = [(fields, values)];
        let fetched = engine.get_multi(&request, &*source, false)?.pop().expect("one list");
        let [(fields, values)] = request;
        let completion = EngineCompletion::new(engine, fields, values, source);
        Ok(List::new(fetched, layout, fixed, completion))
    }
}

impl<C: Completion> List<C> {
    /// A list over `fetched` (as the engine returned it for `layout`);
    /// `fixed` are the schema positions the list's key fixes, with their
    /// values (they are not stored in records).
    pub fn new(fetched: Fetched, layout: Layout, fixed: Vec<(usize, Value)>, completion: C) -> Self {
        List {
            key: fetched.key.clone(),
            from_cache: fetched.hit,
            content: RwLock::new(Arc::new(fetched)),
            layout,
            fixed,
            completion,
        }
    }

    /// The list's key (its head's).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// True when the list was read from the cache (a hit), false when it was
    /// built or read from the source.
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }

    /// The record layout of the list.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The schema positions the list's key fixes, with their values.
    pub fn fixed(&self) -> &[(usize, Value)] {
        &self.fixed
    }

    /// How the list completes itself.
    pub fn completion(&self) -> &C {
        &self.completion
    }

    /// What has been read so far (the head, or the complete list); no I/O.
    pub fn current(&self) -> Arc<Fetched> {
        self.content.read().expect("list poisoned").clone()
    }

    /// True once every segment has been read.
    pub fn is_complete(&self) -> bool {
        self.current().complete
    }

    /// The complete list, fetching the segments if they were not read yet.
    pub fn whole(&self) -> std::result::Result<Arc<Fetched>, C::Error> {
        let now = self.current();
        if now.complete {
            return Ok(now);
        }
        // No lock is held while completing: it may wait on the network.
        let whole = Arc::new(self.completion.complete(&now)?);
        *self.content.write().expect("list poisoned") = whole.clone();
        Ok(whole)
    }

    /// Content that holds the first `n` records (all of them if the list is
    /// shorter): what has been read, when it reaches that far, else the
    /// complete list.
    pub fn prefix(&self, n: usize) -> std::result::Result<Arc<Fetched>, C::Error> {
        let now = self.current();
        if n <= now.live.len() {
            Ok(now)
        } else {
            self.whole()
        }
    }

    /// The number of records (completes the list).
    pub fn len(&self) -> std::result::Result<usize, C::Error> {
        Ok(self.whole()?.live.len())
    }

    /// True when the list has no record; a head with records answers
    /// without completing the list.
    pub fn is_empty(&self) -> std::result::Result<bool, C::Error> {
        Ok(self.current().live.is_empty() && self.whole()?.live.is_empty())
    }

    /// Bytes the cache holds for the list, every part (0 when the cache
    /// could not be used and the list came from the source).
    pub fn size(&self) -> std::result::Result<usize, C::Error> {
        let whole = self.whole()?;
        Ok(if whole.hit || whole.fault.is_none() { whole.parts.iter().map(Vec::len).sum() } else { 0 })
    }

    /// Decodes record `i` of `content` (a [`current`](Self::current),
    /// [`prefix`](Self::prefix) or [`whole`](Self::whole) of this list, with
    /// `i` below its `live.len()`): returns its pk and fills `out` with the
    /// values of [`Layout::stored`], in order, borrowing `content`'s bytes.
    pub fn decode<'a>(
        &self,
        content: &'a Fetched,
        i: usize,
        out: &mut Vec<ValueRef<'a>>,
    ) -> std::result::Result<i64, C::Error> {
        let (p, s, e) = content.live[i];
        out.clear();
        self.layout
            .decode_record(&content.parts[p as usize][s as usize..e as usize], out)
            .map_err(|e| C::Error::from(Error::Decode(format!("{} (list {})", inner(e), self.key))))
    }

    /// Record `i` of `content` as a row in schema order (see [`decode`](Self::decode)).
    pub fn row_of(&self, content: &Fetched, i: usize) -> std::result::Result<Row, C::Error> {
        let mut values = Vec::with_capacity(self.layout.stored().len());
        let pk = self.decode(content, i, &mut values)?;
        let mut row = vec![Value::Null; self.layout.schema().fields().len()];
        row[0] = Value::Int(pk);
        for (&pos, v) in self.layout.stored().iter().zip(&values) {
            row[pos] = ValueRef::to_owned(*v);
        }
        for (pos, v) in &self.fixed {
            row[*pos] = v.clone();
        }
        Ok(row)
    }

    /// Record `i` (newest first) as a row in schema order, or `None` past
    /// the end. Completes the list only when `i` is past the head.
    pub fn get(&self, i: usize) -> std::result::Result<Option<Row>, C::Error> {
        let content = self.prefix(i.saturating_add(1))?;
        if i >= content.live.len() {
            return Ok(None);
        }
        self.row_of(&content, i).map(Some)
    }

    /// The primary keys, newest first (completes the list).
    pub fn pks(&self) -> std::result::Result<Vec<i64>, C::Error> {
        let whole = self.whole()?;
        let mut values = Vec::with_capacity(self.layout.stored().len());
        (0..whole.live.len()).map(|i| self.decode(&whole, i, &mut values)).collect()
    }

    /// The rows, newest first: the head's first, then (only if the
    /// iteration goes on) the rest after completing the list.
    pub fn rows(&self) -> Rows<'_, C> {
        Rows { list: self, next: 0, content: None, done: false }
    }
}

/// The message of a codec error, without the variant's own wording.
fn inner(e: Error) -> String {
    match e {
        Error::Decode(msg) => msg,
        other => other.to_string(),
    }
}

/// The rows of a [`List`], newest first; see [`List::rows`]. An error
/// (completing the list, or decoding a record) ends the iteration.
pub struct Rows<'l, C> {
    list: &'l List<C>,
    next: usize,
    content: Option<Arc<Fetched>>,
    done: bool,
}

impl<C: Completion> Iterator for Rows<'_, C> {
    type Item = std::result::Result<Row, C::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let reached = self.content.as_ref().is_some_and(|c| self.next < c.live.len());
        if !reached {
            match self.list.prefix(self.next + 1) {
                Ok(content) => self.content = Some(content),
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        let content = self.content.as_ref().expect("content was read");
        if self.next >= content.live.len() {
            self.done = true;
            return None;
        }
        let row = self.list.row_of(content, self.next);
        self.done = row.is_err();
        self.next += 1;
        Some(row)
    }
}
