//! The model-wide counters' value, and the write tags that make them exact.
//!
//! A model-wide counter (`count()` with no filters, and its day/week/month/
//! year buckets) has no list to count: it is built from a database `COUNT`
//! under a lease and moved by every write. A plain `incr` is not idempotent,
//! so a counter built after a write committed but before its `incr` landed
//! would count that row twice. Instead a write *prepends* its move, tagged
//! with the write's id (`with_write_tag`: Django passes the id of the
//! write intent it inserted in the same transaction), and a builder stores,
//! beside its count, the tags of the writes that were committed in the
//! count's own snapshot (`ModelCount::in_flight`: the intents still in the
//! table). A reader skips the moves of those tags: their rows are in the
//! base already. Every other move is applied.
//!
//! Why this is exact (the lease does the rest): a move that lands between
//! the builder's lease and its `cas` changes the CAS and the build is redone;
//! one that lands before the lease finds no counter (nothing stored, the row
//! is in the `COUNT`); one that lands after the store is either of a write
//! the snapshot saw (its tag is in `in_flight`: skipped) or of one it did not
//! (applied). A write with no tag (tag 0: no transaction, no intents) keeps
//! the old window between its COMMIT and its move; the counters' epoch
//! bounds it.
//!
//! Value (ASCII): `move* base`, where a move is `{tag:x}{+|-}{delta:x};`
//! (prepended, newest first) and the base is `{count + COUNTER_BASE}`,
//! optionally followed by `~{tag:x},{tag:x}...` (the tags in flight). A plain
//! number (the format before tags) parses as a base with no tags. A reader
//! that finds many moves folds them into the base (`fold`, stored by `cas`).

use super::Missing;
use crate::store::Op;
use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};

thread_local! {
    static WRITE_TAG: Cell<u64> = const { Cell::new(0) };
}

/// What a model-wide counter stores above its count. `decr` stops at zero
/// (memcached's rule, and the embedded store's): a decrement that reaches a
/// counter before the increment it follows would be lost at zero. Kept with
/// tagged moves too, so that a counter of the plain format reads the same.
pub(crate) const COUNTER_BASE: u64 = 1 << 40;

/// A reader folds a counter once it carries this many moves.
pub(crate) const FOLD_AT: usize = 64;

/// A builder that finds more writes in flight than this stores nothing
/// (the value would be large): the count is served from the database.
pub(crate) const MAX_IN_FLIGHT: usize = 4096;

/// A model-wide count as the source took it: the live rows, and the tags of
/// the writes committed in the same snapshot whose cache work may not have
/// landed yet (Django: the ids of the write intents still in the table).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelCount {
    /// Live rows (in the bucket asked for).
    pub rows: u64,
    /// Tags of committed writes whose counter moves may still come.
    pub in_flight: Vec<u64>,
}

/// Runs `f` with the model-wide counter moves of every write it makes on
/// this thread tagged `tag` (0: untagged). The tag names one committed
/// write, unique for the site (Django: its write intent's id); a source
/// that reports it in [`ModelCount::in_flight`] makes the counters exact.
pub fn with_write_tag<R>(tag: u64, f: impl FnOnce() -> R) -> R {
    struct Restore(u64);
    impl Drop for Restore {
        fn drop(&mut self) {
            WRITE_TAG.with(|t| t.set(self.0));
        }
    }
    let _restore = Restore(WRITE_TAG.with(|t| t.replace(tag)));
    f()
}

/// The tag writes on this thread carry now (0: none).
pub fn write_tag() -> u64 {
    WRITE_TAG.with(Cell::get)
}

/// The bytes a write prepends to move a counter by `delta`, tagged with
/// this thread's write tag.
pub(crate) fn move_entry(delta: i64) -> Vec<u8> {
    let sign = if delta < 0 { '-' } else { '+' };
    format!("{:x}{sign}{:x};", write_tag(), delta.unsigned_abs()).into_bytes()
}

/// A write's ops as sent: its counter moves (planned as `incr`/`decr`)
/// become one tagged prepend per counter, the sum of its moves, where the
/// first of them was (so one write sends one move per counter: see
/// [`CounterValue::fold`]).
pub(super) fn tag_moves(ops: Vec<(Op, Option<Missing>)>) -> Vec<(Op, Option<Missing>)> {
    let mut sums: HashMap<String, i64> = HashMap::new();
    for (op, _) in &ops {
        match op {
            Op::Incr { key, delta } => *sums.entry(key.clone()).or_insert(0) += *delta as i64,
            Op::Decr { key, delta } => *sums.entry(key.clone()).or_insert(0) -= *delta as i64,
            _ => {}
        }
    }
    if sums.is_empty() {
        return ops;
    }
    let mut out = Vec::with_capacity(ops.len());
    for (op, target) in ops {
        match op {
            Op::Incr { key, .. } | Op::Decr { key, .. } => match sums.remove(&key) {
                Some(0) | None => {}
                Some(delta) => out.push((Op::Prepend { key, value: move_entry(delta) }, Some(Missing::Counter))),
            },
            op => out.push((op, target)),
        }
    }
    out
}

/// A parsed model-wide counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CounterValue {
    /// The stored base (`count + COUNTER_BASE`).
    base: u64,
    /// Tags whose moves the base already holds.
    in_flight: BTreeSet<u64>,
    /// The moves prepended since the base was stored, newest first.
    moves: Vec<(u64, i64)>,
}

impl CounterValue {
    /// Parses a counter value (None: not a counter, e.g. a lease marker).
    pub(crate) fn parse(value: &[u8]) -> Option<CounterValue> {
        let text = std::str::from_utf8(value).ok()?.trim_end();
        let mut parts = text.split(';');
        let base_part = parts.next_back()?;
        let moves = parts.map(parse_move).collect::<Option<Vec<_>>>()?;
        let (base, tags) = match base_part.split_once('~') {
            Some((b, t)) => (b, Some(t)),
            None => (base_part, None),
        };
        let base: u64 = base.parse().ok()?;
        base.checked_sub(COUNTER_BASE)?;
        let in_flight = match tags {
            Some(t) => t.split(',').map(|x| u64::from_str_radix(x, 16).ok()).collect::<Option<BTreeSet<_>>>()?,
            None => BTreeSet::new(),
        };
        Some(CounterValue { base, in_flight, moves })
    }

    /// The value of a counter just counted: `rows`, with the writes in
    /// flight (their moves are skipped when they come).
    pub(crate) fn encode(rows: u64, in_flight: &[u64]) -> Vec<u8> {
        let mut out = (rows + COUNTER_BASE).to_string();
        let mut tags: Vec<u64> = in_flight.iter().copied().filter(|&t| t != 0).collect();
        tags.sort_unstable();
        tags.dedup();
        for (i, tag) in tags.iter().enumerate() {
            out.push(if i == 0 { '~' } else { ',' });
            out.push_str(&format!("{tag:x}"));
        }
        out.into_bytes()
    }

    /// The count it stands for: the base and every move not already in it.
    pub(crate) fn count(&self) -> u64 {
        let moved: i128 = self
            .moves
            .iter()
            .filter(|(tag, _)| *tag == 0 || !self.in_flight.contains(tag))
            .map(|&(_, d)| d as i128)
            .sum();
        (self.base as i128 - COUNTER_BASE as i128 + moved).max(0) as u64
    }

    /// How many moves it carries.
    pub(crate) fn moves(&self) -> usize {
        self.moves.len()
    }

    /// The same count with its moves folded into the base. A tag whose move
    /// was skipped leaves the tags in flight: one write sends one move per
    /// counter, so it will not come again.
    pub(crate) fn fold(&self) -> Vec<u8> {
        let seen: BTreeSet<u64> = self.moves.iter().map(|&(t, _)| t).collect();
        let left: Vec<u64> = self.in_flight.difference(&seen).copied().collect();
        CounterValue::encode(self.count(), &left)
    }
}

fn parse_move(text: &str) -> Option<(u64, i64)> {
    let at = text.find(['+', '-'])?;
    let tag = u64::from_str_radix(&text[..at], 16).ok()?;
    let delta = i64::from_str_radix(&text[at + 1..], 16).ok()?;
    Some((tag, if text.as_bytes()[at] == b'-' { -delta } else { delta }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(moves: &[(u64, i64)], base: &[u8]) -> Vec<u8> {
        let mut v = base.to_vec();
        for &(tag, d) in moves {
            let mut m = with_write_tag(tag, || move_entry(d));
            m.extend_from_slice(&v);
            v = m;
        }
        v
    }

    #[test]
    fn a_writes_moves_go_out_as_one_tagged_prepend_per_counter() {
        let ops = vec![
            (Op::Incr { key: "c".into(), delta: 1 }, None),
            (Op::Prepend { key: "l".into(), value: b"r".to_vec() }, None),
            (Op::Decr { key: "d".into(), delta: 1 }, None),
            (Op::Incr { key: "c".into(), delta: 2 }, None),
            (Op::Incr { key: "d".into(), delta: 1 }, None),
        ];
        let sent: Vec<(String, Vec<u8>)> = with_write_tag(0xab, || tag_moves(ops))
            .into_iter()
            .map(|(op, _)| match op {
                Op::Prepend { key, value } => (key, value),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(sent, vec![("c".into(), b"ab+3;".to_vec()), ("l".into(), b"r".to_vec())]);
    }

    #[test]
    fn a_plain_counter_reads_as_before() {
        let plain = (5 + COUNTER_BASE).to_string().into_bytes();
        assert_eq!(CounterValue::parse(&plain).unwrap().count(), 5);
        assert_eq!(CounterValue::parse(&CounterValue::encode(5, &[])).unwrap().count(), 5);
    }

    #[test]
    fn moves_of_writes_in_flight_are_skipped_and_others_applied() {
        let base = CounterValue::encode(10, &[7, 9]);
        let v = value(&[(7, 1), (3, 1), (0, -1), (9, -1), (0x1f, 2)], &base);
        // 10 + (3: +1) + (untagged: -1) + (1f: +2); 7 and 9 are in the base
        assert_eq!(CounterValue::parse(&v).unwrap().count(), 12);
    }

    #[test]
    fn folding_keeps_the_count_and_the_tags_still_to_come() {
        let base = CounterValue::encode(10, &[7, 9]);
        let c = CounterValue::parse(&value(&[(7, 1), (3, 1)], &base)).unwrap();
        let folded = CounterValue::parse(&c.fold()).unwrap();
        assert_eq!((folded.count(), folded.moves()), (11, 0));
        // 9's move comes later and is still skipped; a new one is applied
        let later = CounterValue::parse(&value(&[(9, -1), (4, 1)], &c.fold())).unwrap();
        assert_eq!(later.count(), 12);
    }

    #[test]
    fn a_count_never_reads_below_zero_and_garbage_is_not_a_counter() {
        let v = value(&[(0, -3)], &CounterValue::encode(1, &[]));
        assert_eq!(CounterValue::parse(&v).unwrap().count(), 0);
        for bad in [&b""[..], b"abc", b"12", b"1+;5", b"x+1;1099511627776", b"1099511627776~zz"] {
            assert!(CounterValue::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn the_tag_is_the_calling_threads_and_is_restored() {
        assert_eq!(write_tag(), 0);
        with_write_tag(5, || {
            assert_eq!(write_tag(), 5);
            with_write_tag(6, || assert_eq!(move_entry(-2), b"6-2;"));
            assert_eq!(std::thread::spawn(write_tag).join().unwrap(), 0);
            assert_eq!(write_tag(), 5);
        });
        assert_eq!(write_tag(), 0);
    }
}
