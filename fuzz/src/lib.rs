//! Listy's fuzz targets. Each target's body is a plain `run(&[u8])` here;
//! `fuzz_targets/*.rs` only hand libFuzzer's input to it. So the bodies
//! build and run on stable with `cargo test --manifest-path fuzz/Cargo.toml`
//! (the seed and regression inputs in `tests`), and under cargo-fuzz.
//!
//! - [`decode_list`]: arbitrary bytes as one list value, and split into a
//!   head and segments, through `read_parts`, `decode_record`, `describe`
//!   and compaction.
//! - [`list_roundtrip`]: a random schema and rows; the encoding must read
//!   back exactly (whole and in parts), then flipped / truncated / extended
//!   copies must never panic the reader.
//! - [`reply_parser`]: the memcached reply parser fed whole and in random
//!   splits must agree, never panic and never claim more bytes than given.
//! - [`pgoutput`]: PostgreSQL's logical decoding messages (`listy_sync`):
//!   never panic, re-encode to what decodes the same, prefixes refused.

pub mod check;
pub mod decode_list;
pub mod list_roundtrip;
pub mod pgoutput;
pub mod reply_parser;

/// Inputs and checks that reach bugs already reported (README.md,
/// "Findings": `f1`, `f2`) are steered around unless named in
/// `LISTY_FUZZ_KNOWN_BUGS` (comma-separated, or `1` for all), so that a run
/// keeps exploring instead of stopping on the same crash. Name one to check
/// its fix.
pub fn known_bug(id: &str) -> bool {
    static ON: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let on = ON.get_or_init(|| {
        std::env::var("LISTY_FUZZ_KNOWN_BUGS")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect()
    });
    on.iter().any(|s| s == "1" || s == "all" || s == id)
}

#[cfg(test)]
mod tests;
