//! Erasure-coding throughput on this machine: `offsite::erasure::split` (pad, Reed-Solomon
//! parity) and `join` with data pieces lost, on 64 MiB stored shards, on one core and on all
//! cores. Used by `scripts/bench-erasure.sh`; prints one markdown table row per scheme and mode.
//!
//!     cargo run --release --example erasure-throughput [SCHEMES...]   (default: 2+1 4+2 3+2)

use bytes::Bytes;
use offsite::erasure::{join, split, Scheme};
use std::time::Instant;

const SHARD: usize = 64 << 20;
const ROUNDS: usize = 8;

fn main() {
    let mut schemes: Vec<String> = std::env::args().skip(1).collect();
    if schemes.is_empty() {
        schemes = ["2+1", "4+2", "3+2"].map(String::from).to_vec();
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shard: bytes::Bytes = (0..SHARD)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect::<Vec<u8>>()
        .into();
    println!("| scheme | threads | encode MiB/s (stream) | encode pieces/s | decode MiB/s (m data pieces lost) |");
    println!("|---|---:|---:|---:|---:|");
    for s in &schemes {
        let scheme: Scheme = s.parse().unwrap_or_else(|e| panic!("{e}"));
        for threads in [1, cores] {
            let (enc, dec) = measure(scheme, &shard, threads);
            let pieces_per_s = enc / (SHARD as f64 / (1 << 20) as f64) * scheme.total() as f64;
            println!("| {scheme} | {threads} | {enc:.0} | {pieces_per_s:.0} | {dec:.0} |");
        }
    }
}

/// Encode and decode rates (MiB of stored shard per second) with `threads` threads each
/// working through `ROUNDS` shards.
fn measure(scheme: Scheme, shard: &bytes::Bytes, threads: usize) -> (f64, f64) {
    let mib = (SHARD * ROUNDS * threads) as f64 / (1 << 20) as f64;
    let start = Instant::now();
    let pieces = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut last = None;
                    for _ in 0..ROUNDS {
                        last = Some(split(scheme, shard).unwrap());
                    }
                    last
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .last()
            .flatten()
    });
    let enc = mib / start.elapsed().as_secs_f64();
    let pieces = pieces.expect("at least one round");
    // The worst case: the first m data pieces lost, so the decoder has to restore them.
    let given: Vec<Option<Bytes>> = pieces
        .iter()
        .enumerate()
        .map(|(i, p)| (i >= scheme.m.min(scheme.k)).then(|| p.clone()))
        .collect();
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..ROUNDS {
                    let back = join(scheme, SHARD as u64, &given).unwrap();
                    assert_eq!(back.len(), SHARD);
                }
            });
        }
    });
    (enc, mib / start.elapsed().as_secs_f64())
}
