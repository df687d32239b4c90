//! `Engine::change`: the one place that decides what a row change does to
//! lists and counters.
//!
//! A writer (Django's signals, Listy's own calls, a bulk path, a change
//! stream, a Rust service) knows the row as the database held it before and
//! after its write; it hands both to [`Engine::change`], which picks the
//! frames: a record where the row is listed now, a tombstone where it was
//! listed and is no more (final when the row is gone), an `update` frame
//! where it stays, final tombstones for a row deleted while no list held it,
//! and the model-wide counter moves that go with them.
//!
//! **Settling.** Two writers of one existing row commit in one order but
//! their frames may reach the cache in the other (a soft delete and a
//! revival; two saves). So once its frames have landed, a change to an
//! existing row reads the row once more ([`Source::row`]) and, if the
//! database holds another state now, writes that state as a change from
//! what it wrote: whoever writes last has seen the database's last word. A
//! row found gone is buried in the lists of the state written here (its
//! delete may have read an older state and tombstoned other lists). An
//! insert settles only when its row's primary-key list existed already:
//! every change of an existing row creates that list when it is missing, so
//! an insert whose frames land after a later change of its row finds it
//! (an insert that found none, or whose model has no primary-key index, is
//! left to the caller to settle later in a batch: [`Engine::settle_many`]). A
//! delete for good reads the row once after its frames landed: a row
//! inserted again under its primary key meanwhile, whose frames landed
//! first, would stay hidden by the delete's final tombstones, so it is
//! re-created in the cache (a new generation, then the row). A
//! settle moves frames only, never counters: `incr`/`decr` commute, so the
//! model-wide counters are right whatever order the writers' moves arrive.

use super::{Arriving, Engine, Leaving, NoSource, Source, Step, WriteReport};
use crate::codec::{Row, Value};
use crate::error::Result;

/// A row as one engine sees it: its values in schema order, whether its
/// lists hold it (enabled, not soft-deleted, or kept with the flag set), and
/// the local day of its timestamp field for the model-wide period counters.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The row in schema order (primary key first).
    pub row: Row,
    /// Whether lists hold the row.
    pub listed: bool,
    /// Local day (days since 1970-01-01) of the timestamp field, if any.
    pub day: Option<i32>,
}

impl Stored {
    /// A listed row.
    pub fn listed(row: Row, day: Option<i32>) -> Stored {
        Stored { row, listed: true, day }
    }

    /// A row lists do not hold (soft-deleted or disabled).
    pub fn unlisted(row: Row, day: Option<i32>) -> Stored {
        Stored { row, listed: false, day }
    }

    fn pk(&self) -> Option<&Value> {
        self.row.first()
    }
}

/// How a change is applied. [`Engine::change`] uses the default (all on):
/// what a writer that just committed the change wants. A follower of the
/// database's change stream (`listy_sync`) applies changes it reads in
/// commit order, after the fact, and turns some off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeOptions {
    /// Move the model-wide counters (`incr`/`decr`).
    pub counted: bool,
    /// Delete the model-wide counters the change touches instead of moving
    /// them (set `counted` off): the next read counts them afresh under its
    /// lease, which a delete landing meanwhile breaks. Idempotent, unlike a
    /// move: for a follower that may see a change another writer already
    /// counted, or see it twice.
    pub recount: bool,
    /// Build from the source the lists a new row arrives in that are not
    /// cached (so the next read is a hit). Off: they stay missing and the
    /// next read builds them, which costs a follower no database read.
    pub build_missing: bool,
    /// Read the row again once the frames landed and write the database's
    /// state if it moved on ([`Engine::change`]'s settle). A follower that
    /// applies every committed change in commit order needs none: a later
    /// state reaches it as a later change.
    pub settle: bool,
}

impl Default for ChangeOptions {
    fn default() -> Self {
        ChangeOptions { counted: true, recount: false, build_missing: true, settle: true }
    }
}

impl ChangeOptions {
    /// How a follower of the database's change stream applies the changes
    /// it reads in commit order, some of them already applied by the
    /// process that wrote them: frames only (idempotent per primary key),
    /// counters it touches deleted, no settle (a later state comes as a
    /// later change), no list built (no database read).
    pub fn follower() -> ChangeOptions {
        ChangeOptions { counted: false, recount: true, build_missing: false, settle: false }
    }
}

/// How many times a settle writes a newer state before giving up (each
/// round means yet another writer committed meanwhile; the last of them
/// settles after us).
pub(super) const SETTLE_ROUNDS: usize = 8;

/// What one change does, before it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Nothing: the row is in no list before or after.
    Nothing,
    /// A new record in every list of the new row; lists not cached are
    /// built (the next read is a hit).
    Add,
    /// Tombstones in every list of the old row (`hard`: the row is gone).
    Remove {
        /// The row is gone for good: final tombstones.
        hard: bool,
    },
    /// Final tombstones without counter moves: a row deleted while no list
    /// held it (so that a late frame of an earlier revival stays hidden).
    Bury,
    /// Tombstones where the row left, an `update` frame where it stays, a
    /// record where it arrived; counters move between buckets.
    Move,
}

impl Plan {
    /// The plan for a change from `old` to `new` (either may be absent:
    /// an insert, a hard delete).
    pub fn of(old: Option<&Stored>, new: Option<&Stored>) -> Plan {
        Plan::of_listed(old.map(|s| s.listed), new.map(|s| s.listed))
    }

    /// The plan from whether lists held the row before and after (None:
    /// the row was absent).
    pub fn of_listed(old: Option<bool>, new: Option<bool>) -> Plan {
        match (old, new) {
            (None, None) | (None, Some(false)) | (Some(false), Some(false)) => Plan::Nothing,
            (None, Some(true)) | (Some(false), Some(true)) => Plan::Add,
            (Some(true), None) => Plan::Remove { hard: true },
            (Some(false), None) => Plan::Bury,
            (Some(true), Some(true)) => Plan::Move,
            (Some(true), Some(false)) => Plan::Remove { hard: false },
        }
    }

    /// The plan's name: `nothing`, `add`, `remove`, `delete` (a hard
    /// remove), `bury` or `move`.
    pub fn name(self) -> &'static str {
        match self {
            Plan::Nothing => "nothing",
            Plan::Add => "add",
            Plan::Remove { hard: false } => "remove",
            Plan::Remove { hard: true } => "delete",
            Plan::Bury => "bury",
            Plan::Move => "move",
        }
    }

    /// Whether the change must settle: it changed an existing row that
    /// stays in the database and touched lists.
    fn settles(self, old: Option<&Stored>, new: Option<&Stored>) -> bool {
        old.is_some() && new.is_some() && self != Plan::Nothing
    }
}

impl Engine {
    /// Applies a row change to every list and counter, then settles it.
    ///
    /// `old` is the row as the database held it before the write (None: it
    /// did not exist), `new` as it holds it after (None: deleted). Call it
    /// after the write committed. The settle read goes to
    /// `source.row(pk)`; building a missing list to `source.rows`.
    pub fn change(&self, old: Option<&Stored>, new: Option<&Stored>, source: &dyn Source) -> Result<WriteReport> {
        self.change_with(old, new, source, ChangeOptions::default())
    }

    /// [`Engine::change`] with the given options.
    pub fn change_with(
        &self,
        old: Option<&Stored>,
        new: Option<&Stored>,
        source: &dyn Source,
        options: ChangeOptions,
    ) -> Result<WriteReport> {
        let plan = Plan::of(old, new);
        let mut report = self.apply(plan, old, new, source, options.counted, options.build_missing)?;
        // An insert settles at once only when another write of the row
        // landed first: its primary-key list existed already (a change of
        // an existing row creates it when missing). Otherwise (no such list
        // was there, or the model has none) the caller may settle it later,
        // with others, in one read (`settle_many`: Listy's background worker).
        let raced_insert = old.is_none() && plan == Plan::Add && report.pk_list_found == Some(true);
        if options.settle && (plan.settles(old, new) || raced_insert) {
            if let Some(new) = new {
                self.settle(new.clone(), source, &mut report)?;
            }
        }
        if let (true, Some(gone), None, Plan::Remove { hard: true } | Plan::Bury) = (options.settle, old, new, plan) {
            self.check_not_recreated(gone, source, &mut report)?;
        }
        Ok(report)
    }

    /// A row inserted under a primary key that may have been used before
    /// (a stale instance's `save()` re-creating a row deleted meanwhile,
    /// fixtures loaded with their keys, an explicit `pk=`). The earlier
    /// row's final tombstones would hide it in any list it ever joins, so
    /// the model's lists start afresh (a new generation: every list is
    /// rebuilt from the database on its next read), then the row is added.
    pub fn recreate(&self, new: &Stored, source: &dyn Source) -> Result<WriteReport> {
        self.flush()?;
        let mut report = self.apply(Plan::of(None, Some(new)), None, Some(new), source, true, true)?;
        // In the new generation nothing tells whether a later change of the
        // row landed first: always settle.
        self.settle(new.clone(), source, &mut report)?;
        Ok(report)
    }

    /// After a delete for good landed: if the row is back (inserted again
    /// under its primary key, by a writer whose frames landed before this
    /// delete's), this delete's final tombstones would hide it for good;
    /// the row is re-created in the cache ([`Engine::recreate`]).
    fn check_not_recreated(&self, gone: &Stored, source: &dyn Source, report: &mut WriteReport) -> Result<()> {
        let Some(pk) = gone.pk() else { return Ok(()) };
        if let Some(back) = source.row(pk)? {
            let more = self.recreate(&back, source)?;
            report.failed_keys.extend(more.failed_keys);
            report.faults.extend(more.faults);
        }
        Ok(())
    }

    /// Several row changes `(old, new)` in order, with `options`, their frames
    /// and counter moves sent in one pipelined batch (a change stream's
    /// transaction):
    /// the same as calling [`Engine::change_with`] on each in turn, in one
    /// round trip instead of one per change. Changes of one row keep their
    /// order (ops on one key reach its server in batch order).
    pub fn change_sequence(
        &self,
        changes: &[(Option<Stored>, Option<Stored>)],
        source: &dyn Source,
        options: ChangeOptions,
    ) -> Result<WriteReport> {
        let steps: Vec<Step<'_>> = changes
            .iter()
            .filter_map(|(old, new)| step(Plan::of(old.as_ref(), new.as_ref()), old.as_ref(), new.as_ref(), options))
            .collect();
        let mut report = if steps.is_empty() { WriteReport::default() } else { self.write_steps(&steps, source)? };
        if options.settle {
            for (old, new) in changes {
                if Plan::of(old.as_ref(), new.as_ref()).settles(old.as_ref(), new.as_ref()) {
                    if let Some(new) = new {
                        self.settle(new.clone(), source, &mut report)?;
                    }
                }
            }
        }
        Ok(report)
    }

    /// Sends the frames of one planned change, and its counter moves when
    /// `counted` (a settle moves lists only: counter moves commute, so each
    /// writer's own moves are right in any order).
    fn apply(
        &self,
        plan: Plan,
        old: Option<&Stored>,
        new: Option<&Stored>,
        source: &dyn Source,
        counted: bool,
        build: bool,
    ) -> Result<WriteReport> {
        let options = ChangeOptions { counted, recount: false, build_missing: build, settle: false };
        match step(plan, old, new, options) {
            // only an arriving row reads the source (to build a missing list)
            Some(s) if s.added.is_some() => self.write_steps(&[s], source),
            Some(s) => self.write_steps(&[s], &NoSource),
            None => Ok(WriteReport::default()),
        }
    }

    /// After a change's frames landed: while the database holds another
    /// state of the row than the one written, write that state.
    fn settle(&self, mut written: Stored, source: &dyn Source, report: &mut WriteReport) -> Result<()> {
        let Some(pk) = written.pk().cloned() else { return Ok(()) };
        for _ in 0..SETTLE_ROUNDS {
            let Some(current) = source.row(&pk)? else {
                // Gone for good. Its delete's final tombstones went to the
                // lists of the row as that writer read it; bury the state
                // written here too, in case the two differ (the delete read
                // a stale row): no list may keep a deleted row.
                if written.listed {
                    let more = self.apply(Plan::Bury, Some(&written), None, source, false, false)?;
                    report.failed_keys.extend(more.failed_keys);
                    report.faults.extend(more.faults);
                    // inserted again meanwhile, its frames landed first?
                    self.check_not_recreated(&written, source, report)?;
                }
                return Ok(());
            };
            if current == written {
                return Ok(());
            }
            let plan = Plan::of(Some(&written), Some(&current));
            let more = self.apply(plan, Some(&written), Some(&current), source, false, false)?;
            report.failed_keys.extend(more.failed_keys);
            report.faults.extend(more.faults);
            written = current;
        }
        Ok(())
    }
}

/// The write step of one planned change (None: it writes nothing), as
/// [`Engine::change_with`]'s `apply` would send it.
fn step<'a>(plan: Plan, old: Option<&'a Stored>, new: Option<&'a Stored>, options: ChangeOptions) -> Option<Step<'a>> {
    let counted = options.counted;
    let (removed, added, build) = match (plan, old, new) {
        (Plan::Add, _, Some(n)) => (vec![], arriving(n, counted), options.build_missing),
        (Plan::Remove { hard }, Some(o), _) => (vec![leaving(o, hard, counted)], None, false),
        (Plan::Bury, Some(o), _) => (vec![leaving(o, true, false)], None, false),
        (Plan::Move, Some(o), Some(n)) => (vec![leaving(o, false, counted)], arriving(n, counted), false),
        _ => return None,
    };
    let recount = if options.recount { recount_days(plan, old, new) } else { vec![] };
    Some(Step { removed, added, build, recount })
}

/// The days whose model-wide counters a counted change would move: the new
/// row's when it arrives, the old one's when it leaves, both when a move
/// changes its day (a move within one day moves nothing).
pub(super) fn recount_days(plan: Plan, old: Option<&Stored>, new: Option<&Stored>) -> Vec<Option<i32>> {
    match (plan, old, new) {
        (Plan::Add, _, Some(n)) => vec![n.day],
        (Plan::Remove { .. }, Some(o), _) => vec![o.day],
        (Plan::Move, Some(o), Some(n)) if o.day != n.day => vec![o.day, n.day],
        _ => vec![],
    }
}

/// `s` entering its lists (`counted`: the model-wide counters count it).
pub(super) fn arriving(s: &Stored, counted: bool) -> Option<Arriving<'_>> {
    Some(Arriving { row: &s.row, day: s.day, counted })
}

/// `s` leaving its lists (`hard`: for good; `counted`: the model-wide
/// counters counted it).
pub(super) fn leaving(s: &Stored, hard: bool, counted: bool) -> Leaving<'_> {
    Leaving { row: &s.row, day: s.day, hard, counted }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(listed: bool) -> Stored {
        Stored { row: vec![Value::Int(1)], listed, day: None }
    }

    #[test]
    fn the_change_matrix() {
        let (on, off) = (s(true), s(false));
        assert_eq!(Plan::of(None, None), Plan::Nothing);
        assert_eq!(Plan::of(None, Some(&on)), Plan::Add);
        assert_eq!(Plan::of(None, Some(&off)), Plan::Nothing);
        assert_eq!(Plan::of(Some(&on), None), Plan::Remove { hard: true });
        assert_eq!(Plan::of(Some(&off), None), Plan::Bury);
        assert_eq!(Plan::of(Some(&on), Some(&on)), Plan::Move);
        assert_eq!(Plan::of(Some(&on), Some(&off)), Plan::Remove { hard: false });
        assert_eq!(Plan::of(Some(&off), Some(&on)), Plan::Add);
        assert_eq!(Plan::of(Some(&off), Some(&off)), Plan::Nothing);
    }

    #[test]
    fn only_changes_to_rows_that_stay_settle() {
        let (on, off) = (s(true), s(false));
        let settles = |o: Option<&Stored>, n: Option<&Stored>| Plan::of(o, n).settles(o, n);
        assert!(settles(Some(&on), Some(&on)));
        assert!(settles(Some(&on), Some(&off)));
        assert!(settles(Some(&off), Some(&on)));
        assert!(!settles(Some(&off), Some(&off)));
        assert!(!settles(None, Some(&on)));
        assert!(!settles(Some(&on), None));
        assert!(!settles(Some(&off), None));
    }
}
