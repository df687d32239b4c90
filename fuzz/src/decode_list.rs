//! Target `decode_list`: arbitrary bytes through the list reader.
//!
//! Input: `ctl` byte, then the value bytes.
//!
//! - `ctl & 0x07`: which layout of [`check::layouts`] reads it.
//! - `ctl & 0x08`: append the right trailer to each part ourselves (head:
//!   `segments` = parts - 1, segments: their index, one build id), so that
//!   the frame walk is reached without guessing the 32-bit fingerprint.
//! - `ctl & 0x10`: also split the value: the next byte `n` gives
//!   `n % 8 + 1` parts, then `n` u16le lengths of all parts but the last,
//!   which takes the rest.
//! - `ctl >> 5`: the part limits a compaction of the list uses.
//!
//! The whole value is always read as one part too (`read_parts(&[bytes])`).

use crate::check::{self, layouts};
use listy_core::codec::Part;

const BUILD_ID: u32 = 0x0B17_D00D;

/// (head_max, segment_max) for compaction, by `ctl >> 5`.
const LIMITS: [(usize, usize); 8] =
    [(1 << 20, 1 << 20), (200, 4000), (64, 256), (16, 64), (1, 40), (0, 1 << 16), (300, 300), (40, 15)];

pub fn run(data: &[u8]) {
    let Some((&ctl, rest)) = data.split_first() else { return };
    let layout = &layouts()[(ctl & 0x07) as usize];
    let auto_trailer = ctl & 0x08 != 0;
    let (head_max, segment_max) = LIMITS[(ctl >> 5) as usize];

    let mut pieces: Vec<&[u8]> = vec![rest];
    if ctl & 0x10 != 0 {
        let Some((&n, mut body)) = rest.split_first() else { return };
        let count = (n % 8) as usize + 1;
        let mut lens = Vec::with_capacity(count);
        for _ in 1..count {
            let Some((len, tail)) = body.split_first_chunk::<2>() else { return };
            lens.push(u16::from_le_bytes(*len) as usize);
            body = tail;
        }
        pieces.clear();
        for len in lens {
            let (part, tail) = body.split_at(len.min(body.len()));
            pieces.push(part);
            body = tail;
        }
        pieces.push(body);
    }

    let owned: Vec<Vec<u8>> = pieces
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut v = p.to_vec();
            if auto_trailer {
                let which = if i == 0 {
                    Part::Head { segments: (pieces.len() - 1) as u16 }
                } else {
                    Part::Segment { index: (i - 1) as u16 }
                };
                v.extend_from_slice(&layout.trailer(which, BUILD_ID));
            }
            v
        })
        .collect();
    let parts: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();

    check::exercise(layout, &[rest], head_max, segment_max);
    if parts.len() > 1 || auto_trailer {
        check::exercise(layout, &parts, head_max, segment_max);
    }
}
