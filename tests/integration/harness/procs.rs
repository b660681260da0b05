//! Looking at processes through `/proc`: who is alive, whose children are whose, who carries a
//! test's environment marker; and [`poll`]/[`wait_for`], the bounded way to wait for a condition.

use std::path::Path;
use std::time::{Duration, Instant};

/// Polls `cond` every few milliseconds until it holds (true) or `timeout` passes (false).
pub fn poll(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// [`poll`], failing the test with `what` on timeout.
pub fn wait_for(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    assert!(
        poll(timeout, cond),
        "timed out after {timeout:?} waiting for {what}"
    );
}

/// (parent pid, state letter) of a process, from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(u32, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The process exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    matches!(stat(pid), Some((_, state)) if state != 'Z' && state != 'X')
}

/// Every live descendant of `pid` (children, their children, ...).
pub fn descendants_of(pid: u32) -> Vec<u32> {
    let table: Vec<(u32, u32)> = all_pids()
        .into_iter()
        .filter(|&p| is_alive(p))
        .filter_map(|p| stat(p).map(|(ppid, _)| (p, ppid)))
        .collect();
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(p, pp) in &table {
            if pp == parent && !found.contains(&p) {
                found.push(p);
                frontier.push(p);
            }
        }
    }
    found
}

/// Live processes whose environment holds `key=value`, as (pid, command line).
pub fn processes_with_env(key: &str, value: &str) -> Vec<(u32, String)> {
    let needle = format!("{key}={value}");
    all_pids()
        .into_iter()
        .filter(|&p| p != std::process::id() && is_alive(p))
        .filter(|&p| {
            std::fs::read(format!("/proc/{p}/environ"))
                .map(|env| env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()))
                .unwrap_or(false)
        })
        .map(|p| (p, cmdline(p)))
        .collect()
}

fn cmdline(pid: u32) -> String {
    let raw =
        std::fs::read(Path::new("/proc").join(pid.to_string()).join("cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw)
        .replace('\0', " ")
        .trim()
        .to_string()
}
