//! Reading a list stored in segments without reading all of it: counts,
//! deep pages and keyset pages from the head and the few segments they need.
//!
//! A head with segments starts, as built, with an *index* frame: each
//! segment's record count and pk range. Segments never change after the
//! build (a compaction writes new ones under a new id), each holds only
//! `record` frames, and no pk is in two of them or in the head's own base
//! records. So the only frames that can change what a segment shows are
//! the ones *prepended* to the head since the build (before the index):
//! a prepended frame for a pk that a segment holds hides that record
//! (a record placed in the head, a tombstone, a final tombstone) or gives
//! it new content (an update). [`HeadIndex`] reads the head once and keeps
//! those *shadows*; a segment's live records are its records minus the
//! hidden ones, in order, which is exactly what the full walk of
//! [`crate::codec::ListView`] shows.
//!
//! A segment's live count is its index count less the hidden shadows it
//! holds. Whether it holds a shadowed pk is certain without reading it when
//! the pk is outside the segment's pk range (new rows, the common prepend);
//! otherwise the segment is read once ([`HeadIndex::ambiguous`]): a count
//! costs the head, plus at most one batched read of those segments.

use crate::codec::{decode_index, Layout, Part, PkHasher, PkSet, SegmentInfo, TAG_FINAL_TOMBSTONE, TAG_INDEX};
use crate::codec::{TAG_RECORD, TAG_UPDATE, TRAILER_LEN};
use crate::error::{Error, Result};
use std::collections::HashMap;

/// Where a live record's content is: (part, start, end) of the parts it
/// is read with (part 0 is always the head).
pub type Range = (u16, u32, u32);

/// What a prepended frame does to a record of the same pk in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shadow {
    /// The record is hidden (placed in the head, or deleted).
    Skip,
    /// The record shows this content of the head (an update).
    Content(u32, u32),
}

/// A head with segments, read once: its own live records, the index, and
/// the shadows its prepended frames cast on the segments.
#[derive(Debug, Clone)]
pub struct HeadIndex {
    id: u32,
    segments: Vec<SegmentInfo>,
    /// Live records of the head (what a head-only read shows), with pks.
    head: Vec<(i64, Range)>,
    shadows: HashMap<i64, Shadow, std::hash::BuildHasherDefault<PkHasher>>,
    /// Updates with no record in the head, newest first: a segment record
    /// of that pk shows them; without one, the list ends with them.
    orphans: Vec<(i64, Range)>,
}

/// The live count of every block of a segmented list, in list order: the
/// head, each segment, and the orphan updates that end the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocks {
    /// Live records of the head, then of each segment.
    pub lens: Vec<usize>,
    /// Orphan updates no segment holds, listed last (head ranges).
    pub trailing: Vec<Range>,
}

impl Blocks {
    /// Records in the whole list.
    pub fn total(&self) -> usize {
        self.lens.iter().sum::<usize>() + self.trailing.len()
    }

    /// The list position of the first record of block `b` (0: the head,
    /// `1 + s`: segment `s`, `lens.len()`: the trailing updates).
    pub fn start(&self, b: usize) -> usize {
        self.lens[..b.min(self.lens.len())].iter().sum()
    }
}

impl HeadIndex {
    /// Reads `head`; `None` when it has no segments or no index (a head
    /// written before indexes existed: read the whole list instead).
    pub fn new(layout: &Layout, head: &[u8]) -> Result<Option<HeadIndex>> {
        let (segments_named, id) = match layout.part_of(head)? {
            (Part::Head { segments }, id) => (segments, id),
            _ => return Err(Error::Decode("a segment where the head was expected".into())),
        };
        if segments_named == 0 {
            return Ok(None);
        }
        let body = &head[..head.len() - TRAILER_LEN];
        let mut frames = Vec::new();
        let mut segments = None;
        let mut pos = 0;
        while pos < body.len() {
            let (tag, pk, end) = layout.frame_at(body, pos)?;
            if tag == TAG_INDEX && segments.is_none() {
                segments = Some((decode_index(body, pos)?.0, frames.len()));
            } else if tag != TAG_INDEX {
                frames.push((tag, pk, pos as u32, end as u32));
            }
            pos = end;
        }
        let Some((segments, prepended)) = segments else { return Ok(None) };
        if segments.len() != segments_named as usize {
            return Err(Error::Decode(format!(
                "the index lists {} segments, the head {segments_named}",
                segments.len()
            )));
        }
        Ok(Some(Self::walk(id, segments, &frames, prepended)))
    }

    /// The head's frames (tag, pk, start, end), the first `prepended` of
    /// them written since the build: the reading rules of a head-only view.
    fn walk(id: u32, segments: Vec<SegmentInfo>, frames: &[(u8, i64, u32, u32)], prepended: usize) -> HeadIndex {
        let hard: PkSet = frames.iter().filter(|f| f.0 == TAG_FINAL_TOMBSTONE).map(|f| f.1).collect();
        let mut placed = PkSet::default();
        let mut pending: HashMap<i64, Shadow, std::hash::BuildHasherDefault<PkHasher>> = HashMap::default();
        let mut order = Vec::new();
        let mut head = Vec::new();
        for &(tag, pk, s, e) in frames {
            if placed.contains(&pk) {
                continue;
            }
            if tag == TAG_RECORD {
                placed.insert(pk);
                let content = match pending.remove(&pk) {
                    Some(Shadow::Content(a, b)) => Some((a, b)),
                    Some(Shadow::Skip) => None,
                    None => Some((s, e)),
                };
                if let (Some((a, b)), false) = (content, hard.contains(&pk)) {
                    head.push((pk, (0, a, b)));
                }
            } else if let std::collections::hash_map::Entry::Vacant(slot) = pending.entry(pk) {
                order.push(pk);
                slot.insert(if tag == TAG_UPDATE { Shadow::Content(s, e) } else { Shadow::Skip });
            }
        }
        let mut shadows: HashMap<i64, Shadow, std::hash::BuildHasherDefault<PkHasher>> = HashMap::default();
        for &(_, pk, _, _) in &frames[..prepended] {
            let shadow = match pending.get(&pk) {
                _ if hard.contains(&pk) || placed.contains(&pk) => Shadow::Skip,
                Some(s) => *s,
                None => Shadow::Skip,
            };
            shadows.insert(pk, shadow);
        }
        let orphans = order
            .into_iter()
            .filter_map(|pk| match shadows.get(&pk) {
                Some(Shadow::Content(a, b)) => Some((pk, (0, *a, *b))),
                _ => None,
            })
            .collect();
        HeadIndex { id, segments, head, shadows, orphans }
    }

    /// What the index says of each segment.
    pub fn segments(&self) -> &[SegmentInfo] {
        &self.segments
    }

    /// The build id the segments are stored under.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The head's live records (pk, range), in list order.
    pub fn head(&self) -> &[(i64, Range)] {
        &self.head
    }

    /// Updates whose record is not in the head (pk, head range): each
    /// shows once, where a segment holds its pk, else at the list's end.
    pub fn orphans(&self) -> &[(i64, Range)] {
        &self.orphans
    }

    /// The segments that must be read before counting: those whose pk
    /// range holds a pk the head shadows (ascending, no repeats).
    pub fn ambiguous(&self) -> Vec<u16> {
        let mut out: Vec<u16> = (0..self.segments.len() as u16)
            .filter(|&s| {
                let info = self.segments[s as usize];
                self.shadows.keys().any(|pk| info.min <= *pk && *pk <= info.max)
            })
            .collect();
        out.dedup();
        out
    }

    /// Checks that `bytes` is segment `index` of this build; its body.
    fn body<'b>(&self, layout: &Layout, index: u16, bytes: &'b [u8]) -> Result<&'b [u8]> {
        if layout.part_of(bytes)? != (Part::Segment { index }, self.id) {
            return Err(Error::Decode(format!("segment {index} does not belong to this head")));
        }
        Ok(&bytes[..bytes.len() - TRAILER_LEN])
    }

    /// Calls `each(pk, range)` for every live record of segment `index`
    /// (`bytes`), in order; its ranges name part `part`, and an update's
    /// content names the head (part 0).
    pub fn walk_segment(
        &self,
        layout: &Layout,
        index: u16,
        bytes: &[u8],
        part: u16,
        mut each: impl FnMut(i64, Range),
    ) -> Result<()> {
        let body = self.body(layout, index, bytes)?;
        let mut pos = 0;
        while pos < body.len() {
            let (tag, pk, end) = layout.frame_at(body, pos)?;
            if tag != TAG_RECORD {
                return Err(Error::Decode(format!("a frame 0x{tag:02x} in segment {index}")));
            }
            match self.shadows.get(&pk) {
                None => each(pk, (part, pos as u32, end as u32)),
                Some(Shadow::Content(a, b)) => each(pk, (0, *a, *b)),
                Some(Shadow::Skip) => {}
            }
            pos = end;
        }
        Ok(())
    }

    /// The blocks' live counts, given every [`ambiguous`](Self::ambiguous)
    /// segment as `(index, bytes)` (others may be given too).
    pub fn blocks(&self, layout: &Layout, read: &[(u16, &[u8])]) -> Result<Blocks> {
        let mut lens = Vec::with_capacity(self.segments.len() + 1);
        lens.push(self.head.len());
        lens.extend(self.segments.iter().map(|s| s.count as usize));
        let mut found = PkSet::default();
        for &(index, bytes) in read {
            let body = self.body(layout, index, bytes)?;
            let mut pos = 0;
            while pos < body.len() {
                let (_, pk, end) = layout.frame_at(body, pos)?;
                if let Some(shadow) = self.shadows.get(&pk) {
                    found.insert(pk);
                    if *shadow == Shadow::Skip {
                        lens[1 + index as usize] = lens[1 + index as usize].saturating_sub(1);
                    }
                }
                pos = end;
            }
        }
        for s in self.ambiguous() {
            if !read.iter().any(|(i, _)| *i == s) {
                return Err(Error::Decode(format!("segment {s} is needed to count the list")));
            }
        }
        let trailing = self.orphans.iter().filter(|(pk, _)| !found.contains(pk)).map(|(_, r)| *r).collect();
        Ok(Blocks { lens, trailing })
    }
}
