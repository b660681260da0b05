//! Watching a run: progress tells the truth. Per provider it shows bytes *stored*, so a
//! provider capped at 2 MiB/s never shows more than its cap and one that fails shows 0 B and
//! says `retrying`, then `DOWN`; the main rate is the upload rate; a command's estimate is
//! its previous backup's size, with no ETA before there is a rate; every line fits 80
//! columns; off a terminal a progress line is logged once a minute unless told otherwise.

use crate::harness::*;
use std::time::{Duration, Instant};

const DS: &str = "media";
const CAP: &str = "2M";
const CAP_BYTES: f64 = 2.0 * MIB as f64;
const LEN: usize = 16 * MIB;
/// rclone's bandwidth limiter holds a bucket of up to 4 MiB that fills while the server idles:
/// that much can go through at once before the cap holds.
const BURST: f64 = 4.0 * MIB as f64;
/// `human_bytes` rounds to a tenth of a unit.
const ROUNDING: f64 = 0.05 * MIB as f64;

/// p1 (a local directory) and `dav`, a webdav server capped at [`CAP`]; a command dataset of
/// [`LEN`] random bytes, stored uncompressed so that stored bytes are stream bytes.
fn capped_env(seed: u64) -> (Env, RcloneServer) {
    let mut env = Env::new(1);
    let server = RcloneServer::webdav_with_bwlimit(&env.path().join("dav"), CAP);
    let src = env.path().join("src.bin");
    write_pseudo_random(&src, seed, LEN);
    env.command_dataset(DS, &format!("cat {}", src.display()))
        .set("compression", "none")
        .provider("dav", &server.remote())
        .provider_set("dav", "flags", vec!["--low-level-retries", "1"]);
    (env, server)
}

/// `24.0` `MiB` as bytes.
fn bytes_of(number: &str, unit: &str) -> Option<f64> {
    let scale = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => MIB as f64,
        "GiB" => (1u64 << 30) as f64,
        _ => return None,
    };
    Some(number.parse::<f64>().ok()? * scale)
}

/// The first `N UNIT` amount in `words` and the first `N UNIT/s` rate after it.
fn amount_and_rate(words: &[&str]) -> (Option<f64>, Option<f64>) {
    let pairs: Vec<(&str, &str)> = words.windows(2).map(|w| (w[0], w[1])).collect();
    let amount = pairs.iter().find_map(|(n, u)| bytes_of(n, u));
    let rate = pairs
        .iter()
        .find_map(|(n, u)| bytes_of(n, u.strip_suffix("/s")?));
    (amount, rate)
}

/// A provider's bar line (`  dav  12.0 MiB  2.0 MiB/s  sending 1.0 MiB`): stored, rate.
fn lane_figures(line: &str, provider: &str) -> Option<(f64, Option<f64>)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    if !line.starts_with("  ") || words.first() != Some(&provider) {
        return None;
    }
    let (amount, rate) = amount_and_rate(&words[1..]);
    Some((amount?, rate))
}

/// The main bar line (`backup media [===>  ] 3.0 MiB/~16.0 MiB 2.0 MiB/s ETA 7s`): done, rate.
fn main_figures(line: &str) -> Option<(f64, Option<f64>)> {
    let at = line.find(&format!("backup {DS} "))?;
    let words: Vec<&str> = line[at..].split_whitespace().skip(2).collect();
    let words: Vec<&str> = words.iter().flat_map(|w| w.split('/')).collect();
    let (amount, _) = amount_and_rate(&words);
    let rate_words: Vec<&str> = line[at..].split_whitespace().collect();
    let (_, rate) = amount_and_rate(&rate_words);
    Some((amount?, rate))
}

/// A rate shown with `shown` bytes is within the cap, allowing for the limiter's burst: the
/// bytes came in at most `BURST + cap × elapsed`, where elapsed is `shown / rate`.
fn assert_within_cap(what: &str, shown: f64, rate: Option<f64>, line: &str) {
    if let Some(rate) = rate.filter(|_| shown >= 2.0 * BURST) {
        let bound = 1.5 * CAP_BYTES * shown / (shown - BURST);
        assert!(
            rate <= bound,
            "{what} shows {rate:.0} B/s, over its {CAP}/s cap (with the burst: {bound:.0}): {line:?}"
        );
    }
}

/// The bytes of every file under `dir`.
fn bytes_under(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => bytes_under(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// Each progress line is held against what dav holds when the test reads it: the bytes shown
/// as stored on dav, and the backup's bytes done, never exceed it (bytes handed to rclone
/// would: they run seconds ahead of a 2 MiB/s server). Every line fits 80 columns; the second
/// backup of a command expects the first one's size and shows an ETA.
#[test]
fn a_terminal_shows_what_the_provider_holds_on_80_columns_with_an_estimate() {
    let (env, server) = capped_env(91);
    let mut runs = Vec::new();
    for run in ["first", "second"] {
        let before = bytes_under(server.dir());
        let mut seen = Vec::new();
        let out = env.offsite_in_terminal(&["backup", "--once"], |line| {
            let held = bytes_under(server.dir()).saturating_sub(before);
            seen.push((line.to_string(), held as f64));
        });
        let shown: Vec<&str> = seen.iter().map(|(l, _)| l.as_str()).collect();
        assert!(
            out.status.success(),
            "{run} run failed:\n{}",
            shown.join("\n")
        );
        check_lines(run, &seen);
        runs.push(shown.join("\n"));
    }
    assert!(
        !runs[0].contains("/~"),
        "a first command backup has no estimate"
    );
    assert!(
        runs[1]
            .lines()
            .any(|l| l.contains("/~16.0 MiB") && l.contains("ETA")),
        "no estimate from the previous backup:\n{}",
        runs[1]
    );
    drop(server);
}

fn check_lines(run: &str, seen: &[(String, f64)]) {
    let (mut dav_lines, mut main_lines) = (0, 0);
    for (line, held) in seen {
        // Log lines (and rclone's messages in them) may wrap; the progress lines may not.
        let progress = ["p1", "dav"]
            .iter()
            .any(|p| lane_figures(line, p).is_some())
            || main_figures(line).is_some();
        assert!(
            !progress || line.chars().count() <= 80,
            "{run}: wider than 80: {line:?}"
        );
        if let Some((stored, rate)) = lane_figures(line, "dav") {
            dav_lines += 1;
            assert!(
                stored <= held + ROUNDING,
                "{run}: dav shows {stored} B stored, it holds {held}: {line:?}"
            );
            assert_within_cap("dav", stored, rate, line);
        }
        if let Some((done, rate)) = main_figures(line) {
            main_lines += 1;
            assert!(
                done <= held + ROUNDING,
                "{run}: {done} B done, dav holds {held}: {line:?}"
            );
            assert_within_cap("the backup", done, rate, line);
            assert!(
                !(line.contains("ETA") && rate.is_none()),
                "{run}: an ETA without a rate: {line:?}"
            );
        }
    }
    assert!(
        dav_lines > 0 && main_lines > 0,
        "{run}: no progress drawn: {seen:?}"
    );
}

/// A provider whose every upload fails (a closed port) is `retrying`, then `DOWN`, and never
/// shows a byte stored; the capped provider is still uploading when it drops.
#[test]
fn a_failing_provider_says_retrying_then_down_and_shows_nothing_stored() {
    let (mut env, server) = capped_env(92);
    let mut gone = RcloneServer::webdav(&env.path().join("gone"));
    let remote = gone.remote();
    gone.stop();
    env.set("retries", 2)
        .set("retry_delay", "3s")
        .provider("gone", &remote)
        .provider_set("gone", "flags", vec!["--low-level-retries", "1"]);
    let out = env.offsite_with_progress(&["backup", "--once", "--progress-interval", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let progress: Vec<&str> = err
        .lines()
        .filter(|l| l.contains(&format!("backup {DS}: ")))
        .collect();
    let gone_parts: Vec<&str> = progress
        .iter()
        .flat_map(|l| l.split("; "))
        .filter(|p| p.starts_with("gone "))
        .collect();
    assert!(
        gone_parts.iter().all(|p| p.starts_with("gone 0 B")),
        "{gone_parts:?}"
    );
    assert!(
        gone_parts.iter().any(|p| p.contains("retrying 2/2")),
        "no retry shown:\n{err}"
    );
    assert!(
        gone_parts.iter().any(|p| p.ends_with(", DOWN")),
        "no DOWN shown:\n{err}"
    );
    for line in &progress {
        let dav = line.split("; ").find(|p| p.starts_with("dav "));
        let words: Vec<&str> = dav.unwrap_or_default().split_whitespace().collect();
        if let (Some(stored), rate) = amount_and_rate(&words) {
            assert_within_cap("dav", stored, rate, line);
        }
    }
    drop(server);
}

/// Off a terminal, a progress line is logged once a minute by default: a shorter run logs
/// none, and its summary still comes. `--progress-interval 0` turns them off.
#[test]
fn off_a_terminal_progress_is_logged_once_a_minute_and_the_summary_stays() {
    let (env, _) = command_env(2, DS, 93);
    for args in [
        &["backup", "--once"][..],
        &["backup", "--once", "--progress-interval", "0"],
    ] {
        let start = Instant::now();
        let out = env.offsite_with_progress(args);
        let took = start.elapsed();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert!(err.contains("backup finished"), "no summary: {err}");
        if took < Duration::from_secs(60) {
            assert!(!err.contains(&format!("backup {DS}: ")), "{args:?}: {err}");
        }
    }
}
