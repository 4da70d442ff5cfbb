//! What sled 0.34 costs per revision for two index layouts, with nothing else
//! running: the measurement behind the chunked indexes (docs/BENCHMARKS.md).
//!
//! Replays the store's write pattern for a stance change (a ~1.3 KB log
//! entry, the ~1.3 KB latest clause overwritten, and three index entries) in
//! groups of 64 revisions per batch, flushing after each group:
//!
//! ```sh
//! cargo run --release --example sled_layouts -- per-entry   # schema 1: one key per index entry
//! cargo run --release --example sled_layouts -- chunked     # schema 2: 64 entries per key
//! cargo run --release --example sled_layouts -- blocks      # schema 3: and the group's log entries in one key
//! cargo run --release --example sled_layouts -- write-back  # schema 4: and the other keys every 28 groups
//! ```
//!
//! `write-back` writes the latest clause and index chunks only every 28th
//! group (about 100 ms of groups at the write benchmark's rate), the last
//! value of each key, as the store's committer does.
//!
//! Run it under `/usr/bin/time` to see the CPU time of sled's own threads too.

use std::time::Instant;

const REVISIONS: u64 = 50_000;
const GROUP: u64 = 64;
const CHUNK: u64 = 64;
const CLAUSES: u64 = 28;
const PARTIES: u64 = 4;

fn key(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut k = prefix.to_vec();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(part);
    }
    k
}

/// A chunk of `n`th-entry-of-its-list, holding that many entries so far.
fn chunk(n: u64) -> (u64, Vec<u8>) {
    (n / CHUNK, vec![1u8; ((n % CHUNK + 1) * 8) as usize])
}

fn main() {
    let layout = std::env::args().nth(1).unwrap_or_default();
    let chunked = match layout.as_str() {
        "per-entry" => false,
        "chunked" | "blocks" | "write-back" => true,
        _ => {
            eprintln!("usage: sled_layouts per-entry|chunked|blocks|write-back");
            std::process::exit(2);
        }
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let db = sled::Config::new()
        .path(dir.path())
        .flush_every_ms(None)
        .mode(sled::Mode::HighThroughput)
        .segment_size(peace_tracker::store::SEGMENT_SIZE)
        .open()
        .expect("sled opens");
    let snapshot = vec![7u8; 1300];
    let started = Instant::now();
    let mut rev = 1u64;
    let write_back_every: u64 = if layout == "write-back" { 28 } else { 1 };
    let mut group_no = 0u64;
    let mut pending: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = Default::default();
    while rev <= REVISIONS {
        group_no += 1;
        let mut batch = sled::Batch::default();
        let first = rev;
        let mut block = Vec::new();
        for _ in 0..GROUP {
            let clause = format!("p{}", rev % CLAUSES);
            let party = format!("party{}", rev % PARTIES);
            let (c, p) = (clause.as_bytes(), party.as_bytes());
            if layout == "blocks" || layout == "write-back" {
                block.extend_from_slice(&snapshot);
            } else {
                batch.insert(key(b"rev/", &[&rev.to_be_bytes()]), snapshot.clone());
            }
            pending.insert(key(b"clause/", &[b"us", c]), snapshot.clone());
            if chunked {
                let (n, packed) = chunk(rev / CLAUSES);
                pending.insert(key(b"verc/", &[b"us", c, &n.to_be_bytes()]), packed);
                let (n, packed) = chunk(rev);
                pending.insert(key(b"prevc/", &[b"us", &n.to_be_bytes()]), packed);
                let (n, packed) = chunk(rev / PARTIES);
                pending.insert(key(b"ptlc/", &[b"us", p, &n.to_be_bytes()]), packed);
            } else {
                let version = rev.to_be_bytes().to_vec();
                batch.insert(key(b"ver/", &[b"us", c, &rev.to_be_bytes()]), version);
                batch.insert(key(b"prev/", &[b"us", &rev.to_be_bytes()]), vec![]);
                batch.insert(key(b"ptl/", &[b"us", p, &rev.to_be_bytes()]), vec![]);
            }
            rev += 1;
        }
        if layout == "blocks" || layout == "write-back" {
            batch.insert(key(b"rev/", &[&first.to_be_bytes()]), block);
        }
        if group_no.is_multiple_of(write_back_every) {
            for (k, v) in std::mem::take(&mut pending) {
                batch.insert(k, v);
            }
        }
        db.apply_batch(batch).expect("batch applies");
        db.flush().expect("flush");
    }
    let elapsed = started.elapsed();
    println!(
        "{layout}: {REVISIONS} revisions in {:.2} s, {:.1} µs per revision (wall)",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / REVISIONS as f64
    );
}
