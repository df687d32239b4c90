//! `Engine::change_many`: many row changes of one model (an `update()`, a
//! `bulk_create()`, a queryset delete) in one pipelined batch.
//!
//! Every change is planned exactly as [`Engine::change`] plans it, against
//! one meta; then the ops are merged so that the batch costs one round trip
//! (plus the follow-ups of keys found missing) whatever the number of rows:
//! the frames bound for one list go out as one `prepend` (later frames in
//! front, which is the order separate prepends would leave), and the moves
//! of one model-wide counter as one `incr`/`decr` of their sum.
//!
//! A batch does not build the lists it finds missing (that would be one
//! database read per list): their keys are deleted, as any write does when
//! its prepend is not stored, and the next read builds them.
//!
//! **Settling** is the single change's, batched: once the frames landed,
//! the changed rows that stay are read again with one
//! [`super::Source::rows_by_pk`] call, and the rows another writer changed
//! meanwhile are written as one more batch (lists only, never counters).

use super::change::{arriving, leaving, recount_days, SETTLE_ROUNDS};
use super::{Arriving, Engine, Leaving, Meta, Missing, Plan, Stored, WriteReport};
use crate::codec::Value;
use crate::error::{Error, Result};
use crate::fault::Fault;
use crate::store::{Op, Reply};
use std::collections::{HashMap, HashSet};
use std::ops::AddAssign;

/// One planned change: what leaves and what arrives (counted or not), and
/// the days whose model-wide counters it deletes instead of moving them.
struct Planned<'a> {
    removed: Option<Leaving<'a>>,
    added: Option<Arriving<'a>>,
    recount: Vec<Option<i32>>,
}

impl Engine {
    /// Applies many row changes (each `(old, new)` as for [`Engine::change`])
    /// in one pipelined batch, then settles those that changed an existing
    /// row with one [`super::Source::rows_by_pk`] read per settle round.
    ///
    /// Changes are applied in order; two changes of one row in one batch
    /// land in that order (the later one wins, as with two calls).
    pub fn change_many(
        &self,
        changes: &[(Option<Stored>, Option<Stored>)],
        source: &dyn super::Source,
    ) -> Result<WriteReport> {
        self.change_many_with(changes, source, false)
    }

    /// [`Engine::change_many`]; with `recount`, the model-wide counters the
    /// changes touch are deleted (counted afresh by the next read) instead
    /// of moved: for a writer that cannot tell whether its insert inserted
    /// the row or met the same row a concurrent writer inserted (an INSERT
    /// that ignores conflicts, an upsert that found no row to lock), whose
    /// `incr` would count the row a second time. Deleting is idempotent.
    pub fn change_many_with(
        &self,
        changes: &[(Option<Stored>, Option<Stored>)],
        source: &dyn super::Source,
        recount: bool,
    ) -> Result<WriteReport> {
        self.change_many_since(changes, source, recount, None)
    }

    /// [`Engine::change_many_with`] for changes committed after this engine
    /// saw the model at `generation` ([`Engine::generation_seen`], read
    /// before the commit). A delete for good reads its rows once more after
    /// its frames landed, in case a row was inserted again under its primary
    /// key meanwhile and its frames landed first (its final tombstones would
    /// hide it). Every such insert starts a new generation before it writes
    /// a frame ([`Engine::recreate`], Django's saves and bulk inserts under a
    /// given key, raw SQL's repair): so when every frame of this batch landed
    /// in `generation` while it was still current, no re-insert's frame can
    /// be behind them, and the read is skipped.
    pub fn change_many_since(
        &self,
        changes: &[(Option<Stored>, Option<Stored>)],
        source: &dyn super::Source,
        recount: bool,
        generation: Option<u64>,
    ) -> Result<WriteReport> {
        let planned: Vec<Planned<'_>> = changes
            .iter()
            .filter_map(|(old, new)| {
                let (old, new) = (old.as_ref(), new.as_ref());
                let mut p = planned(old, new, !recount)?;
                if recount {
                    p.recount = recount_days(Plan::of(old, new), old, new);
                }
                Some(p)
            })
            .collect();
        let (mut report, landed_in) = self.write_batch_in(&planned)?;
        let mut written: Vec<Stored> = changes
            .iter()
            // every change that leaves the row listed or changed an existing
            // one: inserts too (one read settles the whole batch), so that an
            // insert's frames landing after a later change of the row are
            // corrected
            .filter(|(old, new)| {
                let plan = Plan::of(old.as_ref(), new.as_ref());
                new.is_some() && plan != Plan::Nothing
            })
            .filter_map(|(_, new)| new.clone())
            .collect();
        for _ in 0..SETTLE_ROUNDS {
            if written.is_empty() {
                break;
            }
            written = self.settle_round(written, source, &mut report)?;
        }
        if generation.is_none() || generation != landed_in {
            self.check_none_recreated(changes, source, &mut report)?;
        }
        Ok(report)
    }

    /// Settles rows written earlier (by [`Engine::change`] or
    /// [`Engine::change_many`]): reads them once more with one
    /// [`super::Source::rows_by_pk`] read per round and writes the state of those
    /// the database holds otherwise now (frames only, no counter move;
    /// rows found gone are buried). For a caller that checks inserts later,
    /// in a batch, instead of one read per insert (Listy's background worker).
    pub fn settle_many(&self, written: Vec<Stored>, source: &dyn super::Source) -> Result<WriteReport> {
        let mut report = WriteReport::default();
        let mut written = written;
        for _ in 0..SETTLE_ROUNDS {
            if written.is_empty() {
                break;
            }
            written = self.settle_round(written, source, &mut report)?;
        }
        Ok(report)
    }

    /// After deletes for good landed: rows inserted again under their
    /// primary key meanwhile (whose frames landed first) are re-created in
    /// the cache, with one read for the batch (see `Engine::change`).
    fn check_none_recreated(
        &self,
        changes: &[(Option<Stored>, Option<Stored>)],
        source: &dyn super::Source,
        report: &mut WriteReport,
    ) -> Result<()> {
        let deleted: Vec<Value> = changes
            .iter()
            .filter(|(old, new)| {
                matches!(Plan::of(old.as_ref(), new.as_ref()), Plan::Remove { hard: true } | Plan::Bury)
            })
            .filter_map(|(old, _)| old.as_ref().and_then(|o| o.row.first().cloned()))
            .collect();
        if deleted.is_empty() {
            return Ok(());
        }
        let back = source.rows_by_pk(&deleted)?;
        if back.is_empty() {
            return Ok(());
        }
        self.flush()?;
        let adds: Vec<(Option<Stored>, Option<Stored>)> = back.into_iter().map(|b| (None, Some(b))).collect();
        let more = self.change_many(&adds, source)?;
        report.failed_keys.extend(more.failed_keys);
        report.faults.extend(more.faults);
        Ok(())
    }

    /// Reads the rows written once more and writes the state of those the
    /// database holds otherwise now; returns them (the next round's).
    fn settle_round(
        &self,
        written: Vec<Stored>,
        source: &dyn super::Source,
        report: &mut WriteReport,
    ) -> Result<Vec<Stored>> {
        let pks: Vec<Value> = written.iter().filter_map(|s| s.row.first().cloned()).collect();
        // `Value` holds floats (no `Hash`): key by its printed form
        let current: HashMap<String, Stored> =
            source.rows_by_pk(&pks)?.into_iter().filter_map(|s| s.row.first().map(pk_key).map(|pk| (pk, s))).collect();
        let mut pairs: Vec<(Stored, Stored)> = Vec::new();
        let mut gone: Vec<Stored> = Vec::new();
        for w in written {
            let Some(pk) = w.row.first() else { continue };
            match current.get(&pk_key(pk)) {
                // gone for good: its delete tombstoned the lists of the row
                // as it read it; bury the state written here too
                None if w.listed => gone.push(w),
                None => {}
                Some(now) if *now != w => pairs.push((w, now.clone())),
                Some(_) => {}
            }
        }
        let mut planned: Vec<Planned<'_>> =
            pairs.iter().filter_map(|(w, n)| planned(Some(w), Some(n), false)).collect();
        planned.extend(gone.iter().filter_map(planned_bury));
        let more = self.write_batch(&planned)?;
        report.failed_keys.extend(more.failed_keys);
        report.faults.extend(more.faults);
        if !gone.is_empty() {
            // buried: inserted again meanwhile, their frames landed first?
            let buried: Vec<(Option<Stored>, Option<Stored>)> = gone.into_iter().map(|g| (Some(g), None)).collect();
            self.check_none_recreated(&buried, source, report)?;
        }
        Ok(pairs.into_iter().map(|(_, n)| n).collect())
    }

    /// Sends the merged ops of `changes` for the current meta (again for a
    /// newer meta when it moved meanwhile, skipping keys already written).
    fn write_batch(&self, changes: &[Planned<'_>]) -> Result<WriteReport> {
        Ok(self.write_batch_in(changes)?.0)
    }

    /// [`Self::write_batch`], and the generation every op landed in when
    /// the meta read in the same batch showed it current (None: the meta
    /// moved, or could not be read, and some ops went again).
    fn write_batch_in(&self, changes: &[Planned<'_>]) -> Result<(WriteReport, Option<u64>)> {
        let mut report = WriteReport::default();
        if changes.is_empty() {
            return Ok((report, None));
        }
        let mut done: HashSet<String> = HashSet::new();
        let mut guess = match self.cached_meta() {
            Some(m) => m,
            None => match self.current_meta() {
                Ok(m) => m,
                Err(e) => return Ok((self.batch_unreached(report, e, None, changes), None)),
            },
        };
        for _ in 0..4 {
            let ops: Vec<(Op, Option<Missing>)> = super::counters::tag_moves(self.plan_batch(&guess, changes)?)
                .into_iter()
                .filter(|(op, _)| !done.contains(op.key()))
                .collect();
            let mut batch = vec![Op::Get { key: self.meta_key() }];
            batch.extend(ops.iter().map(|(op, _)| op.clone()));
            let mut replies = self.store.execute(batch);
            let meta_reply = replies.remove(0);
            let mut repairs = Vec::new();
            for ((op, target), reply) in ops.into_iter().zip(replies) {
                let key = op.key().to_string();
                done.insert(key.clone());
                match (&op, reply) {
                    (_, Err(e)) => {
                        report.faults.push(Fault::from(&e));
                        report.failed_keys.push(key);
                    }
                    (Op::Prepend { .. }, Ok(Reply::NotStored)) => match target {
                        Some(Missing::Create(whole)) => repairs.push(Op::Add { key, value: whole }),
                        // no counter: counted afresh when read
                        Some(Missing::Counter) => {}
                        // missing (not built by a batch) or too large: it
                        // must not stay without these frames
                        _ => repairs.push(Op::Delete { key }),
                    },
                    (Op::Add { value, .. }, Ok(Reply::NotStored)) => repairs
                        .push(Op::Prepend { key, value: value[..value.len() - crate::codec::TRAILER_LEN].to_vec() }),
                    _ => {}
                }
            }
            self.follow_up(repairs, &mut report);
            let meta = match meta_reply.and_then(|r| match r {
                Reply::Value(item) => self.meta_from(item),
                other => Err(Error::protocol(&self.store.server_for(&self.meta_key()), format!("{other:?}"))),
            }) {
                Ok(meta) => meta,
                Err(e) => return Ok((self.batch_unreached(report, e, Some(&guess), changes), None)),
            };
            if meta == guess {
                // every op went to this generation, current when it was read
                return Ok((report, Some(meta.generation)));
            }
            guess = meta;
        }
        Ok((report, None))
    }

    /// Every change's ops for `meta`, merged: one prepend per list (frames
    /// in the order separate prepends would leave them), one counter op per
    /// counter (the sum of the moves). A list's frames are merged by
    /// `merge::merge_by_key` (a whole-list `add` or `set` carries the later
    /// frames in front).
    fn plan_batch(&self, meta: &Meta, changes: &[Planned<'_>]) -> Result<Vec<(Op, Option<Missing>)>> {
        let mut frames: Vec<(Op, Option<Missing>)> = Vec::new();
        // the counter moves summed by day first (a batch's rows share a few
        // days), then by key: what one `plan` per change would move
        let mut by_day: HashMap<Option<i32>, i64> = HashMap::new();
        let mut day_order: Vec<Option<i32>> = Vec::new();
        let mut recount_days: HashSet<Option<i32>> = HashSet::new();
        let mut move_day = |day: Option<i32>, delta: i64| {
            by_day
                .entry(day)
                .or_insert_with(|| {
                    day_order.push(day);
                    0
                })
                .add_assign(delta);
        };
        let heads = self.entry_heads(meta);
        for c in changes {
            recount_days.extend(c.recount.iter().copied());
            if let Some(a) = c.added.filter(|a| a.counted) {
                move_day(a.day, 1);
            }
            if let Some(r) = c.removed.as_ref().filter(|r| r.counted) {
                move_day(r.day, -1);
            }
            let removed: &[Leaving<'_>] = c.removed.as_slice();
            frames.extend(self.plan_with(meta, &heads, removed, c.added, false)?);
        }
        let epoch = self.counter_epoch();
        let mut counters: HashMap<String, i64> = HashMap::new();
        let mut counter_order: Vec<String> = Vec::new();
        for day in day_order {
            let delta = by_day[&day];
            if delta == 0 {
                continue;
            }
            for key in self.model_counter_keys(meta.generation, epoch, day) {
                if !counters.contains_key(&key) {
                    counter_order.push(key.clone());
                }
                *counters.entry(key).or_insert(0) += delta;
            }
        }
        let mut recount: Vec<String> = Vec::new();
        for day in recount_days {
            recount.extend(self.model_counter_keys(meta.generation, epoch, day));
        }
        let mut out = super::merge::merge_by_key(frames);
        for key in counter_order {
            match counters[&key] {
                0 => {}
                d if d > 0 => out.push((Op::Incr { key, delta: d as u64 }, None)),
                d => out.push((Op::Decr { key, delta: d.unsigned_abs() }, None)),
            }
        }
        recount.sort();
        recount.dedup();
        out.extend(recount.into_iter().map(|key| (Op::Delete { key }, None)));
        Ok(out)
    }

    /// The report of a batch whose meta could not be read: every key it
    /// would have touched (for the last meta known) needs repair.
    fn batch_unreached(
        &self,
        mut report: WriteReport,
        e: Error,
        meta: Option<&Meta>,
        changes: &[Planned<'_>],
    ) -> WriteReport {
        report.faults.push(Fault::from(&e));
        if let Some(meta) = meta.cloned().or_else(|| self.cached_meta()) {
            if let Ok(ops) = self.plan_batch(&meta, changes) {
                report.failed_keys.extend(ops.into_iter().map(|(op, _)| op.key().to_string()));
            }
        }
        report
    }
}

/// A primary key as a map key.
fn pk_key(pk: &Value) -> String {
    format!("{pk:?}")
}

/// One change's leaving and arriving halves, or None when it does nothing.
fn planned<'a>(old: Option<&'a Stored>, new: Option<&'a Stored>, counted: bool) -> Option<Planned<'a>> {
    let (removed, added) = match (Plan::of(old, new), old, new) {
        (Plan::Add, _, Some(n)) => (None, arriving(n, counted)),
        (Plan::Remove { hard }, Some(o), _) => (Some(leaving(o, hard, counted)), None),
        (Plan::Bury, Some(o), _) => (Some(leaving(o, true, false)), None),
        (Plan::Move, Some(o), Some(n)) => (Some(leaving(o, false, counted)), arriving(n, counted)),
        _ => return None,
    };
    Some(Planned { removed, added, recount: vec![] })
}

/// A row found gone by a settle: final tombstones in the lists of the state
/// written, no counter move.
fn planned_bury(written: &Stored) -> Option<Planned<'_>> {
    Some(Planned { removed: Some(leaving(written, true, false)), added: None, recount: vec![] })
}
