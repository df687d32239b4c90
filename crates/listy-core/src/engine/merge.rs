//! Merging the ops that several changes in one batch send to one key.
//!
//! A batch ([`super::Engine::change_many`], [`super::Engine::change_sequence`])
//! may hold several changes of one row: a change stream's insert and the
//! update after it, say. Their ops on one list must land in the order of the
//! changes. Plain prepends do (ops on one key reach its server in batch
//! order), but a whole-list `add` or a prepend that found no list is followed
//! up *after* the batch (a prepend of the frame, the list stored whole),
//! which would put the earlier change's frame in front of the later one's:
//! the list would show the row as it was. So the frames bound for one key
//! are merged into one op that carries them all, newest in front, which is
//! what the separate ops would have left.

use super::Missing;
use crate::codec::TRAILER_LEN;
use crate::store::Op;
use std::collections::HashMap;

/// Groups `ops` by key (keys in order of first appearance) and merges each
/// key's frames into one op where they can be ([`merge_key`]).
pub(super) fn merge_by_key(ops: Vec<(Op, Option<Missing>)>) -> Vec<(Op, Option<Missing>)> {
    let mut order: Vec<String> = Vec::new();
    let mut by_key: HashMap<String, Vec<(Op, Option<Missing>)>> = HashMap::new();
    for (op, target) in ops {
        let key = op.key().to_string();
        by_key
            .entry(key.clone())
            .or_insert_with(|| {
                order.push(key);
                Vec::new()
            })
            .push((op, target));
    }
    order.into_iter().flat_map(|key| merge_key(by_key.remove(&key).expect("grouped key"))).collect()
}

/// One key's ops in batch order, as one op when they are all frames
/// (`prepend`, a whole-list `add` or `set`) with one kind of follow-up;
/// otherwise unchanged. A `set` replaces the list: the ops before the last
/// one no longer matter.
fn merge_key(ops: Vec<(Op, Option<Missing>)>) -> Vec<(Op, Option<Missing>)> {
    if ops.len() < 2 || !ops.iter().all(|(op, _)| matches!(op, Op::Prepend { .. } | Op::Add { .. } | Op::Set { .. })) {
        return ops;
    }
    let start = ops.iter().rposition(|(op, _)| matches!(op, Op::Set { .. })).unwrap_or(0);
    let mut ops = ops;
    let rest = ops.split_off(start + 1);
    let (first, first_target) = ops.pop().expect("start is in range");
    if rest.iter().any(|(op, _)| !matches!(op, Op::Prepend { .. })) {
        // a second whole-list op after the first: rare, keep them apart
        let mut out = vec![(first, first_target)];
        out.extend(rest);
        return out;
    }
    // the later frames, newest first
    let mut newer = Vec::new();
    for (op, _) in rest.iter().rev() {
        if let Op::Prepend { value, .. } = op {
            newer.extend_from_slice(value);
        }
    }
    let in_front = |whole: &[u8]| [newer.as_slice(), whole].concat();
    let same_follow_up = rest.iter().all(|(_, t)| follow_up_kind(t) == follow_up_kind(&first_target));
    match (first, first_target) {
        (Op::Set { key, value }, _) => vec![(Op::Set { key, value: in_front(&value) }, None)],
        (Op::Add { key, value }, target) if value.len() >= TRAILER_LEN => {
            vec![(Op::Add { key, value: in_front(&value) }, target)]
        }
        (Op::Prepend { key, value }, target) if same_follow_up => {
            let target = match target {
                Some(Missing::Create(whole)) => Some(Missing::Create(in_front(&whole))),
                other => other,
            };
            vec![(Op::Prepend { key, value: in_front(&value) }, target)]
        }
        (first, first_target) => {
            let mut out = vec![(first, first_target)];
            out.extend(rest);
            out
        }
    }
}

/// What a prepend that finds no list leads to: 0 nothing (the key is
/// deleted), 1 a build, 2 the list stored whole.
fn follow_up_kind(target: &Option<Missing>) -> u8 {
    match target {
        None => 0,
        Some(Missing::Build(..)) => 1,
        Some(Missing::Create(_)) => 2,
        Some(Missing::Counter) => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepend(value: &[u8], target: Option<Missing>) -> (Op, Option<Missing>) {
        (Op::Prepend { key: "k".into(), value: value.to_vec() }, target)
    }

    fn whole(frames: &[u8]) -> Vec<u8> {
        [frames, &[0u8; TRAILER_LEN][..]].concat()
    }

    #[test]
    fn a_whole_list_add_carries_the_later_frames_in_front() {
        let ops = vec![(Op::Add { key: "k".into(), value: whole(b"r0") }, None), prepend(b"u1", None)];
        let merged = merge_key(ops);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].0, Op::Add { key: "k".into(), value: whole(b"u1r0") });
    }

    #[test]
    fn prepends_that_store_the_list_whole_merge_with_their_wholes() {
        let ops = vec![
            prepend(b"u1", Some(Missing::Create(whole(b"u1")))),
            prepend(b"u2", Some(Missing::Create(whole(b"u2")))),
        ];
        let merged = merge_key(ops);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].0, Op::Prepend { key: "k".into(), value: b"u2u1".to_vec() });
        assert!(matches!(&merged[0].1, Some(Missing::Create(w)) if *w == whole(b"u2u1")));
    }

    #[test]
    fn a_set_drops_what_came_before_it() {
        let ops =
            vec![prepend(b"r0", None), (Op::Set { key: "k".into(), value: whole(b"t") }, None), prepend(b"r1", None)];
        let merged: Vec<Op> = merge_key(ops).into_iter().map(|(op, _)| op).collect();
        assert_eq!(merged, vec![Op::Set { key: "k".into(), value: whole(b"r1t") }]);
    }

    #[test]
    fn other_ops_keep_their_order() {
        let ops = vec![prepend(b"r0", None), (Op::Delete { key: "k".into() }, None)];
        assert_eq!(merge_key(ops).len(), 2);
        let single = vec![prepend(b"r0", None)];
        assert_eq!(merge_key(single).len(), 1);
    }

    #[test]
    fn keys_are_merged_apart_in_order_of_first_appearance() {
        let ops = vec![
            (Op::Prepend { key: "a".into(), value: b"1".to_vec() }, None),
            (Op::Prepend { key: "b".into(), value: b"2".to_vec() }, None),
            (Op::Prepend { key: "a".into(), value: b"3".to_vec() }, None),
        ];
        let merged = merge_by_key(ops);
        assert_eq!(
            merged.into_iter().map(|(op, _)| op).collect::<Vec<_>>(),
            vec![
                Op::Prepend { key: "a".into(), value: b"31".to_vec() },
                Op::Prepend { key: "b".into(), value: b"2".to_vec() }
            ]
        );
    }
}
