//! `offsite` in a pseudo-terminal 80 columns wide (util-linux `script`), with what the terminal
//! shows handed to the test line by line *while the run goes on*: a test can hold each progress
//! line against what a provider holds at that moment.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long one run in the terminal may take before it is killed and the test fails.
const DEADLINE: Duration = Duration::from_secs(180);

/// Runs `offsite` (the program and arguments of `c`, with its environment and directory) in a
/// terminal of 80 columns. `watch` gets every line the terminal was sent, escape sequences
/// removed, as soon as it is complete. Returns the run's exit status; stdout holds everything
/// shown (stderr and stdout mixed, escapes kept).
pub fn run_in_terminal(c: &Command, mut watch: impl FnMut(&str)) -> Output {
    let mut child = script_for(c)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start script(1)");
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n @ 1..) = out.read(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let (mut shown, mut pending) = (Vec::new(), Vec::new());
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(chunk) => {
                shown.extend_from_slice(&chunk);
                pending.extend_from_slice(&chunk);
                for line in take_lines(&mut pending) {
                    watch(&line);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) if start.elapsed() > DEADLINE => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "offsite ran longer than {DEADLINE:?} in the terminal and was killed:\n{}",
                    String::from_utf8_lossy(&shown)
                );
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    pending.push(b'\n');
    for line in take_lines(&mut pending) {
        watch(&line);
    }
    let _ = reader.join();
    let status = child.wait().expect("wait for script(1)");
    Output {
        status,
        stdout: shown,
        stderr: Vec::new(),
    }
}

/// `script -qfec "stty cols 80 rows 24 && exec PROGRAM ARGS" /dev/null` with `c`'s environment.
fn script_for(c: &Command) -> Command {
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"));
    let mut line = format!("stty cols 80 rows 24 && exec {}", quote(c.get_program()));
    for a in c.get_args() {
        line.push(' ');
        line.push_str(&quote(a));
    }
    let mut script = Command::new("script");
    script
        .args(["-qfec", &line, "/dev/null"])
        .stdin(Stdio::null());
    if let Some(dir) = c.get_current_dir() {
        script.current_dir(dir);
    }
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => script.env(k, v),
            None => script.env_remove(k),
        };
    }
    script
}

/// The complete lines at the front of `pending` (up to its last `\r` or `\n`), removed from
/// it, escape sequences stripped, blank ones dropped.
fn take_lines(pending: &mut Vec<u8>) -> Vec<String> {
    let Some(end) = pending.iter().rposition(|b| *b == b'\n' || *b == b'\r') else {
        return Vec::new();
    };
    let complete: Vec<u8> = pending.drain(..=end).collect();
    strip_escapes(&String::from_utf8_lossy(&complete))
        .split(['\r', '\n'])
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// `text` without terminal escape sequences (CSI `ESC [ ... letter`, and two-character ones).
fn strip_escapes(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            plain.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        }
    }
    plain
}
