//! Placement agreement with pylibmc on real servers.
//!
//! A Rust test cannot call pylibmc, so `tests/rust_support/pylibmc_placement.py`
//! records where pylibmc put each key (it sets the keys through pylibmc and
//! asks every server directly). This test reads such files, named
//! (comma-separated) by `LISTY_PYLIBMC_PLACEMENTS`, and checks that
//! `MemcachedPool::server_for` agrees on every key. Without the variable it
//! prints a notice and passes.

use listy_core::ketama::Distribution;
use listy_core::pool::{MemcachedPool, PoolConfig};
use listy_core::Store;

/// One placement file: the configuration it was made with and its rows.
struct Placements {
    behavior: Distribution,
    servers: Vec<String>,
    rows: Vec<(String, String)>,
}

fn read(path: &str) -> Placements {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let (mut behavior, mut servers, mut rows) = (None, Vec::new(), Vec::new());
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut fields = line.split('\t');
        let first = fields.next().unwrap_or_default();
        match first {
            "#behavior" => {
                behavior = Some(match fields.next() {
                    Some("ketama") => Distribution::Ketama,
                    Some("ketama_weighted") => Distribution::KetamaWeighted,
                    other => panic!("{path}: unknown behavior {other:?}"),
                })
            }
            "#servers" => servers = fields.map(str::to_string).collect(),
            // Only these exact names are headers: keys may start with '#'.
            "#pylibmc" => {}
            key => {
                let server = fields.next().unwrap_or_else(|| panic!("{path}: no server for {key:?}"));
                rows.push((key.to_string(), server.to_string()));
            }
        }
    }
    let behavior = behavior.unwrap_or_else(|| panic!("{path}: no #behavior line"));
    assert!(!servers.is_empty(), "{path}: no #servers line");
    Placements { behavior, servers, rows }
}

fn check(path: &str) {
    let placements = read(path);
    let mut cfg = PoolConfig::new(placements.servers.clone());
    cfg.distribution = placements.behavior;
    let pool = MemcachedPool::new(cfg).expect("servers from the placement file");
    let mismatches: Vec<String> = placements
        .rows
        .iter()
        .filter(|(key, server)| &pool.server_for(key) != server)
        .map(|(key, server)| format!("{key:?}: pylibmc {server}, listy {}", pool.server_for(key)))
        .collect();
    let total = placements.rows.len();
    println!(
        "{path}: {:?} on {:?}: {}/{total} keys agree with pylibmc",
        placements.behavior,
        placements.servers,
        total - mismatches.len()
    );
    assert!(total > 0, "{path}: no placements");
    assert!(
        mismatches.is_empty(),
        "{path}: {} disagreements, e.g. {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(10)]
    );
}

#[test]
fn agrees_with_pylibmc_placements() {
    let Ok(paths) = std::env::var("LISTY_PYLIBMC_PLACEMENTS") else {
        eprintln!(
            "ketama_compat: LISTY_PYLIBMC_PLACEMENTS is not set; skipped. Generate files with \
             tests/rust_support/pylibmc_placement.py and point the variable at them (comma-separated)."
        );
        return;
    };
    for path in paths.split(',').filter(|p| !p.is_empty()) {
        check(path);
    }
}
