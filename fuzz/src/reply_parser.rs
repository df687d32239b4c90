//! Target `reply_parser`: the memcached reply parser of `client.rs`.
//!
//! Input: `ctl` byte, then `ctl >> 4` u16le split points, then the reply
//! stream. `ctl & 0x07` picks `max_value_len`. The stream is parsed the way
//! `Connection::next_frame` does (parse, drop the used bytes, again), once
//! from the whole buffer and once fed in pieces cut at the split points.
//!
//! Checks: no panic; a frame uses at least one byte and at most the bytes
//! given; `NeedMore { at_least }` asks for more than is there, and every
//! longer prefix short of `at_least` still gets `NeedMore`; whole and
//! piecewise parses give the same frames and end the same way (same error,
//! or same pending bytes); a `VALUE` or number frame re-encoded parses back
//! to itself.

use listy_core::client::{Frame, ParseError, Parsed, ReplyParser};

const MAX_VALUE_LEN: [usize; 8] = [0, 1, 2, 16, 512, 1 << 20, 1 << 30, usize::MAX];

/// How a parse ended: an error, or waiting on (pending bytes, at_least).
#[derive(Debug, PartialEq, Eq)]
enum End {
    Error(ParseError),
    Waiting(Vec<u8>, usize),
}

pub fn run(data: &[u8]) {
    let Some((&ctl, mut rest)) = data.split_first() else { return };
    let parser = ReplyParser::new(MAX_VALUE_LEN[(ctl & 0x07) as usize]);
    let mut cuts = Vec::new();
    for _ in 0..(ctl >> 4) {
        let Some((c, tail)) = rest.split_first_chunk::<2>() else { return };
        cuts.push(u16::from_le_bytes(*c) as usize);
        rest = tail;
    }
    let stream = rest;

    let whole = feed(&parser, &[stream]);
    check_need_more_monotone(&parser, stream, cuts.first().copied().unwrap_or(stream.len() / 2));
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    points.sort_unstable();
    let mut pieces = Vec::new();
    let mut start = 0;
    for p in points.into_iter().chain([stream.len()]) {
        pieces.push(&stream[start..p]);
        start = p;
    }
    let split = feed(&parser, &pieces);
    assert_eq!(whole, split, "whole and piecewise parses differ (cuts {cuts:?})");

    for frame in &whole.0 {
        if let Some(wire) = reencode(frame) {
            match parser.parse(&wire) {
                Ok(Parsed::Frame(again, used)) => {
                    assert_eq!(&again, frame, "frame does not re-parse to itself");
                    assert_eq!(used, wire.len());
                }
                other => panic!("re-encoded {frame:?} parses as {other:?}"),
            }
        }
    }
}

/// Parses all it can from `chunks` appended one after another.
fn feed(parser: &ReplyParser, chunks: &[&[u8]]) -> (Vec<Frame>, End) {
    let mut buf: Vec<u8> = Vec::new();
    let mut frames = Vec::new();
    let mut waiting = 0;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match parse_checked(parser, &buf) {
                Ok(Parsed::Frame(frame, used)) => {
                    buf.drain(..used);
                    frames.push(frame);
                }
                Ok(Parsed::NeedMore { at_least }) => {
                    waiting = at_least;
                    break;
                }
                Err(e) => return (frames, End::Error(e)),
            }
        }
    }
    (frames, End::Waiting(buf, waiting))
}

/// `parser.parse(buf)` with the checks every single call must pass.
fn parse_checked(parser: &ReplyParser, buf: &[u8]) -> Result<Parsed, ParseError> {
    let got = parser.parse(buf);
    match &got {
        Ok(Parsed::Frame(_, used)) => {
            assert!(*used > 0, "a frame of 0 bytes");
            assert!(*used <= buf.len(), "used {used} of {} bytes", buf.len());
        }
        Ok(Parsed::NeedMore { at_least }) => {
            assert!(*at_least > buf.len(), "NeedMore {{ at_least: {at_least} }} with {} bytes there", buf.len());
        }
        Err(_) => {}
    }
    got
}

/// The wire form of frames whose fields survive a round trip exactly
/// (STAT and error texts go through a lossy UTF-8 conversion).
fn reencode(frame: &Frame) -> Option<Vec<u8>> {
    let line = |s: &str| format!("{s}\r\n").into_bytes();
    Some(match frame {
        Frame::Value { key, flags, cas, data } => {
            let mut out = b"VALUE ".to_vec();
            out.extend_from_slice(key);
            out.extend_from_slice(format!(" {flags} {}", data.len()).as_bytes());
            if let Some(cas) = cas {
                out.extend_from_slice(format!(" {cas}").as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
            out
        }
        Frame::Number(n) => line(&n.to_string()),
        Frame::End => line("END"),
        Frame::Stored => line("STORED"),
        Frame::NotStored => line("NOT_STORED"),
        Frame::Exists => line("EXISTS"),
        Frame::NotFound => line("NOT_FOUND"),
        Frame::Deleted => line("DELETED"),
        Frame::Ok => line("OK"),
        _ => return None,
    })
}

/// Every prefix of `stream` longer than one that got `NeedMore { at_least }`
/// and shorter than `at_least` gets `NeedMore` too (the connection relies on
/// it to size its reads). Checked from each frame boundary of a whole parse.
fn check_need_more_monotone(parser: &ReplyParser, stream: &[u8], probe: usize) {
    let mut start = 0;
    while start <= stream.len() {
        let buf = &stream[start..];
        let cut = probe % (buf.len() + 1);
        if let Ok(Parsed::NeedMore { at_least }) = parser.parse(&buf[..cut]) {
            let longest = (at_least - 1).min(buf.len());
            for len in [cut + 1, (cut + longest) / 2, longest] {
                if len > cut && len <= longest {
                    let got = parser.parse(&buf[..len]);
                    assert!(
                        matches!(got, Ok(Parsed::NeedMore { .. })),
                        "{cut} bytes need at least {at_least}, yet {len} bytes give {got:?}"
                    );
                }
            }
        }
        match parser.parse(buf) {
            Ok(Parsed::Frame(_, used)) => start += used,
            _ => break,
        }
    }
}
