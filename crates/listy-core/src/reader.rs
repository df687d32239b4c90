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
use crate::segments::{Blocks, HeadIndex, Range};
use std::ops::Deref;
use std::sync::{Arc, OnceLock, RwLock};

/// How a list read head first fetches the rest of itself.
pub trait Completion {
    /// The error a completion can end with; a codec error (an undecodable
    /// record) converts into it, so every access of a [`List`] returns it.
    type Error: From<Error>;

    /// The whole list `partial` is the head of (complete: every segment).
    fn complete(&self, partial: &Fetched) -> std::result::Result<Fetched, Self::Error>;

    /// Segments `indices` of the list `partial` is the head of, in one
    /// batched round trip and in that order; `None` when one is gone (then
    /// the list is read whole). The default reads no segment alone.
    fn segments(&self, partial: &Fetched, indices: &[u16]) -> std::result::Result<Option<Vec<Vec<u8>>>, Self::Error> {
        let _ = (partial, indices);
        Ok(None)
    }
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

    fn segments(&self, partial: &Fetched, indices: &[u16]) -> Result<Option<Vec<Vec<u8>>>> {
        self.engine.segments_of(&self.fields, partial, indices)
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
    /// The head as first read, and what it says of the segments (read on
    /// first need; `None` inside: not segmented, or no index).
    head: Arc<Fetched>,
    index: OnceLock<Option<Arc<HeadIndex>>>,
    /// The live count of each block, once counted (`None` inside: a segment
    /// was gone, the list is read whole).
    blocks: OnceLock<Option<Arc<Blocks>>>,
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
        let head = Arc::new(fetched);
        List {
            key: head.key.clone(),
            from_cache: head.hit,
            content: RwLock::new(head.clone()),
            head,
            index: OnceLock::new(),
            blocks: OnceLock::new(),
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

    /// The number of records: from the head's index and the few segments
    /// it needs (see [`crate::segments`]), else by completing the list.
    pub fn len(&self) -> std::result::Result<usize, C::Error> {
        let now = self.current();
        if now.complete {
            return Ok(now.live.len());
        }
        match self.blocks()? {
            Some(blocks) => Ok(blocks.total()),
            None => Ok(self.whole()?.live.len()),
        }
    }

    /// True when the list has no record; a head with records answers
    /// without reading further.
    pub fn is_empty(&self) -> std::result::Result<bool, C::Error> {
        Ok(self.current().live.is_empty() && self.len()? == 0)
    }

    /// What the head says of the segments (`None`: no segments to read
    /// apart, or a head without an index).
    fn index(&self) -> Option<Arc<HeadIndex>> {
        self.index
            .get_or_init(|| {
                if self.head.complete {
                    return None;
                }
                HeadIndex::new(&self.layout, &self.head.parts[0]).ok().flatten().map(Arc::new)
            })
            .clone()
    }

    /// Segments `indices` of the head's build; `None` when one is gone.
    fn read_segments(&self, indices: &[u16]) -> std::result::Result<Option<Vec<Vec<u8>>>, C::Error> {
        if indices.is_empty() {
            return Ok(Some(Vec::new()));
        }
        self.completion.segments(&self.head, indices)
    }

    /// The live count of each block (head, segments, trailing updates),
    /// reading the segments the count needs once (one batched round trip).
    fn blocks(&self) -> std::result::Result<Option<Arc<Blocks>>, C::Error> {
        if let Some(b) = self.blocks.get() {
            return Ok(b.clone());
        }
        let Some(index) = self.index() else { return Ok(None) };
        let needed = index.ambiguous();
        let blocks = match self.read_segments(&needed)? {
            Some(read) => {
                let given: Vec<(u16, &[u8])> = needed.iter().copied().zip(read.iter().map(Vec::as_slice)).collect();
                Some(Arc::new(index.blocks(&self.layout, &given).map_err(|e| C::Error::from(self.decode_error(e)))?))
            }
            None => None,
        };
        Ok(self.blocks.get_or_init(|| blocks).clone())
    }

    fn decode_error(&self, e: Error) -> Error {
        Error::Decode(format!("{} (list {})", inner(e), self.key))
    }

    /// Content holding list positions `start..end` (or up to the list's
    /// end): the head when it reaches that far; for a list in segments,
    /// the head and only the segments those positions fall in (one batched
    /// round trip, after the count's); else the complete list.
    pub fn span(&self, start: usize, end: usize) -> std::result::Result<Span, C::Error> {
        let now = self.current();
        if now.complete || end <= now.live.len() {
            return Ok(Span { content: now, first: 0 });
        }
        let (Some(index), Some(blocks)) = (self.index(), self.blocks()?) else {
            return Ok(Span { content: self.whole()?, first: 0 });
        };
        // Blocks: 0 the head, 1 + s segment s, last the trailing updates.
        let n = blocks.lens.len();
        let mut chosen = Vec::new();
        let mut at = 0;
        for b in 0..=n {
            let len = if b < n { blocks.lens[b] } else { blocks.trailing.len() };
            if len > 0 && at < end.max(start + 1) && start < at + len {
                chosen.push(b);
            }
            at += len;
        }
        let Some(&first_block) = chosen.first() else {
            return Ok(Span { content: Arc::new(self.window(Vec::new(), Vec::new())), first: at });
        };
        let segs: Vec<u16> = chosen.iter().filter(|&&b| b >= 1 && b < n).map(|&b| (b - 1) as u16).collect();
        let Some(read) = self.read_segments(&segs)? else {
            return Ok(Span { content: self.whole()?, first: 0 });
        };
        let mut live = Vec::new();
        for &b in &chosen {
            if b == 0 {
                live.extend(index.head().iter().map(|(_, r)| *r));
            } else if b == n {
                live.extend_from_slice(&blocks.trailing);
            } else {
                let k = segs.iter().position(|&s| s as usize == b - 1).expect("read");
                index
                    .walk_segment(&self.layout, (b - 1) as u16, &read[k], (k + 1) as u16, |_, r| live.push(r))
                    .map_err(|e| C::Error::from(self.decode_error(e)))?;
            }
        }
        Ok(Span { content: Arc::new(self.window(read, live)), first: blocks.start(first_block) })
    }

    /// A partial content of the head and `segments`, showing `live`.
    fn window(&self, segments: Vec<Vec<u8>>, live: Vec<Range>) -> Fetched {
        let mut parts = Vec::with_capacity(segments.len() + 1);
        parts.push(self.head.parts[0].clone());
        parts.extend(segments);
        Fetched { key: self.key.clone(), parts, live, complete: false, dead_frames: 0, hit: true, fault: None }
    }

    /// A keyset page: up to `limit` records whose pk is below `pk` (all
    /// records when `None`), largest pk first, for `after`; for `before`
    /// (`after` false) the `limit` records with the smallest pks above
    /// `pk`, also largest first. The same rows, in the same order, as
    /// `filter(pk__lt=pk).order_by("-pk")[:limit]` (`pk__gt`, `"pk"`,
    /// reversed), whatever order prepends left the list in. A list in
    /// segments reads the head and the segments whose pk range can hold
    /// the page, most often one.
    pub fn keyset(&self, pk: Option<i64>, limit: usize, after: bool) -> std::result::Result<Span, C::Error> {
        if limit == 0 {
            return Ok(Span { content: Arc::new(self.window(Vec::new(), Vec::new())), first: 0 });
        }
        let wanted = |p: i64| match pk {
            None => true,
            Some(c) if after => p < c,
            Some(c) => p > c,
        };
        // The order of the page: largest pk first after a cursor, smallest
        // first before one (reversed at the end).
        let better = |a: i64, b: i64| if after { a > b } else { a < b };
        let mut found: Vec<(i64, Range)> = Vec::new();
        let mut segments = Vec::new();
        let now = self.current();
        match (now.complete, self.index()) {
            (false, Some(index)) => {
                found.extend(index.head().iter().chain(index.orphans()).filter(|(p, _)| wanted(*p)));
                let infos = index.segments();
                // The best pk each segment could give, among the wanted.
                let bound = |s: usize| {
                    let i = infos[s];
                    let (lo, hi) = match (pk, after) {
                        (Some(c), true) => (i.min, i.max.min(c.saturating_sub(1))),
                        (Some(c), false) => (i.min.max(c.saturating_add(1)), i.max),
                        (None, _) => (i.min, i.max),
                    };
                    (lo <= hi).then_some(if after { hi } else { lo })
                };
                let mut order: Vec<(usize, i64)> = (0..infos.len()).filter_map(|s| bound(s).map(|b| (s, b))).collect();
                order.sort_by(|a, b| if after { b.1.cmp(&a.1) } else { a.1.cmp(&b.1) });
                for (s, best) in order {
                    if found.len() >= limit {
                        sort_keyset(&mut found, after);
                        if !better(best, found[limit - 1].0) {
                            break;
                        }
                    }
                    let Some(mut read) = self.read_segments(&[s as u16])? else {
                        return self.keyset_whole(&wanted, limit, after);
                    };
                    let part = (segments.len() + 1) as u16;
                    // Updates whose record is here are listed as orphans already.
                    index
                        .walk_segment(&self.layout, s as u16, &read[0], part, |p, r| {
                            if r.0 != 0 && wanted(p) {
                                found.push((p, r))
                            }
                        })
                        .map_err(|e| C::Error::from(self.decode_error(e)))?;
                    segments.push(read.pop().expect("one segment"));
                }
            }
            _ => return self.keyset_whole(&wanted, limit, after),
        }
        sort_keyset(&mut found, after);
        found.truncate(limit);
        if !after {
            found.reverse();
        }
        Ok(Span { content: Arc::new(self.window(segments, found.into_iter().map(|(_, r)| r).collect())), first: 0 })
    }

    /// [`keyset`](Self::keyset) over the complete list.
    fn keyset_whole(
        &self,
        wanted: &dyn Fn(i64) -> bool,
        limit: usize,
        after: bool,
    ) -> std::result::Result<Span, C::Error> {
        let whole = self.whole()?;
        let mut found: Vec<(i64, usize)> = Vec::new();
        for (i, &(p, s, e)) in whole.live.iter().enumerate() {
            let pk = pk_of_frame(&whole.parts[p as usize][s as usize..e as usize])
                .map_err(|e| C::Error::from(self.decode_error(e)))?;
            if wanted(pk) {
                found.push((pk, i));
            }
        }
        found.sort_by(|a, b| if after { b.0.cmp(&a.0) } else { a.0.cmp(&b.0) });
        found.truncate(limit);
        if !after {
            found.reverse();
        }
        let live = found.into_iter().map(|(_, i)| whole.live[i]).collect();
        let content = Fetched { live, complete: false, dead_frames: 0, ..(*whole).clone() };
        Ok(Span { content: Arc::new(content), first: 0 })
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
    /// the end. Reads past the head only the segment `i` falls in.
    pub fn get(&self, i: usize) -> std::result::Result<Option<Row>, C::Error> {
        let span = self.span(i, i.saturating_add(1))?;
        if !span.holds(i) {
            return Ok(None);
        }
        self.row_of(&span.content, i - span.first).map(Some)
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
        Rows { list: self, next: 0, span: None, done: false }
    }
}

/// Records of a list from one content: `content.live[i]` is the list's
/// record `first + i` (for a keyset page, `first` is 0 and the records are
/// the page's).
#[derive(Debug, Clone)]
pub struct Span {
    /// The parts read and the records they show.
    pub content: Arc<Fetched>,
    /// The list position of `content.live[0]`.
    pub first: usize,
}

impl Span {
    /// The list position just past the last record the span holds.
    pub fn end(&self) -> usize {
        self.first + self.content.live.len()
    }

    /// Whether the span holds list position `i`.
    pub fn holds(&self, i: usize) -> bool {
        self.first <= i && i < self.end()
    }
}

/// Sorts keyset candidates best first and drops a pk seen twice.
fn sort_keyset(found: &mut Vec<(i64, Range)>, after: bool) {
    found.sort_by(|a, b| if after { b.0.cmp(&a.0) } else { a.0.cmp(&b.0) });
    found.dedup_by_key(|f| f.0);
}

/// The pk of a record frame.
fn pk_of_frame(frame: &[u8]) -> Result<i64> {
    let (v, _) = crate::codec::get_varint(frame.get(1..).unwrap_or_default())?;
    Ok(crate::codec::unzigzag(v))
}

/// The message of a codec error, without the variant's own wording.
fn inner(e: Error) -> String {
    match e {
        Error::Decode(msg) => msg,
        other => other.to_string(),
    }
}

/// The rows of a [`List`], newest first; see [`List::rows`]. An error
/// (reading a segment, or decoding a record) ends the iteration. A list in
/// segments is read one segment at a time, so memory stays flat.
pub struct Rows<'l, C> {
    list: &'l List<C>,
    next: usize,
    span: Option<Span>,
    done: bool,
}

impl<C: Completion> Iterator for Rows<'_, C> {
    type Item = std::result::Result<Row, C::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if !self.span.as_ref().is_some_and(|s| s.holds(self.next)) {
            match self.list.span(self.next, self.next + 1) {
                Ok(span) => self.span = Some(span),
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        let span = self.span.as_ref().expect("span was read");
        if !span.holds(self.next) {
            self.done = true;
            return None;
        }
        let row = self.list.row_of(&span.content, self.next - span.first);
        self.done = row.is_err();
        self.next += 1;
        Some(row)
    }
}
