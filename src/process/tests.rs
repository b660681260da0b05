//! Unit tests of [`super::ChildProc`]: stderr tails in errors, whole-group kills, the guard,
//! and [`super::run_to_end`]'s cancellation and timeout.

use super::*;
use crate::provider::priority::nice_of;

fn sh(script: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(script);
    c
}

#[tokio::test]
async fn failure_carries_stderr_tail() {
    let p = ChildProc::spawn("sh", &mut sh("echo oops >&2; exit 3")).unwrap();
    let e = p.finish().await.unwrap_err();
    assert_eq!(e.status, Some(3));
    assert!(e.to_string().contains("oops"), "{e}");
}

#[tokio::test]
async fn drop_kills_the_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let script = format!("sleep 1000 & echo $! > {}; wait", pidfile.display());
    let mut p = ChildProc::spawn("sh", &mut sh(&script)).unwrap();
    let mut out = p.take_stdout().unwrap();
    // The grandchild's pid is written before `wait`; poll the file, not the clock.
    let gpid = loop {
        if let Ok(s) = std::fs::read_to_string(&pidfile) {
            if s.ends_with('\n') {
                break s.trim().parse::<i32>().unwrap();
            }
        }
        tokio::task::yield_now().await;
    };
    drop(p);
    let mut sink = Vec::new();
    let _ = out.read_to_end(&mut sink).await;
    // Reaped or at least dead: signal 0 fails once the process is gone (it is not our child).
    let mut alive = true;
    for _ in 0..1000 {
        // SAFETY: probing a pid with signal 0.
        alive = unsafe { libc::kill(gpid, 0) } == 0;
        if !alive {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(!alive, "grandchild {gpid} survived the drop");
}

#[tokio::test]
async fn a_program_that_cannot_start_is_reported_as_such() {
    let mut c = Command::new("/nonexistent/offsite-test-program");
    let e = match ChildProc::spawn("helper", &mut c) {
        Ok(_) => panic!("a missing program started"),
        Err(e) => e,
    };
    assert!(e.not_started());
    let text = e.to_string();
    assert!(text.contains("helper could not start"), "{text}");
    assert!(text.contains("No such file"), "{text}");
    assert!(!text.contains("signal"), "{text}");
}

#[tokio::test]
async fn a_signal_is_named_as_such() {
    let p = ChildProc::spawn("sh", &mut sh("kill -9 $$")).unwrap();
    let e = p.finish().await.unwrap_err();
    assert_eq!(e.ended, Ended::Signal(9));
    assert!(e.to_string().contains("killed by signal 9"), "{e}");
}

/// Polls (bounded) until `pid` is gone; signal 0 fails once it is (it is not our child).
async fn gone(pid: i32) -> bool {
    for _ in 0..2000 {
        // SAFETY: probing a pid with signal 0.
        if unsafe { libc::kill(pid, 0) } != 0 {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    false
}

async fn pid_from(file: &std::path::Path) -> i32 {
    loop {
        if let Ok(s) = std::fs::read_to_string(file) {
            if s.ends_with('\n') {
                return s.trim().parse::<i32>().unwrap();
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn the_guard_clears_the_group_once_the_child_is_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    // The grandchild outlives the shell, holding no pipe of ours.
    let script = format!(
        "sleep 1000 >/dev/null 2>&1 & echo $! > {}",
        pidfile.display()
    );
    let p = ChildProc::spawn_guarded("sh", &mut sh(&script)).unwrap();
    p.finish().await.unwrap();
    let gpid = pid_from(&pidfile).await;
    assert!(
        gone(gpid).await,
        "grandchild {gpid} outlived its guarded shell"
    );
}

#[tokio::test]
async fn run_to_end_stops_at_cancellation_and_at_the_timeout() {
    let cancel = CancellationToken::new();
    let long = Duration::from_secs(3600);
    let out = run_to_end("sh", &mut sh("echo hi"), long, &cancel)
        .await
        .unwrap();
    assert_eq!(out, "hi\n");
    let e = run_to_end("sh", &mut sh("echo no >&2; exit 4"), long, &cancel)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, RunError::Failed(c) if c.status == Some(4)),
        "{e}"
    );

    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let script = format!("echo $$ > {}; exec sleep 1000", pidfile.display());
    let stop = cancel.clone();
    let pidfile2 = pidfile.clone();
    tokio::spawn(async move {
        pid_from(&pidfile2).await;
        stop.cancel();
    });
    let e = run_to_end("sh", &mut sh(&script), long, &cancel)
        .await
        .unwrap_err();
    assert!(matches!(e, RunError::Interrupted(_)), "{e}");
    assert!(
        gone(pid_from(&pidfile).await).await,
        "the cancelled child lives on"
    );

    let never = CancellationToken::new();
    let short = Duration::from_millis(200);
    let e = run_to_end("sh", &mut sh("exec sleep 1000"), short, &never)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("did not finish within"), "{e}");
}

#[tokio::test]
async fn set_nice_lowers_the_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let script = format!("sleep 1000 & echo $! > {}; wait", pidfile.display());
    let p = ChildProc::spawn("sh", &mut sh(&script)).unwrap();
    let gpid = pid_from(&pidfile).await;
    let own = nice_of(std::process::id());
    if own == 19 {
        eprintln!("skipped: the tests run at nice 19, below which nothing can go");
        return;
    }
    let lower = (own + 5).min(19);
    p.set_nice(lower).unwrap();
    assert_eq!(nice_of(p.pid().unwrap()), lower, "the child");
    assert_eq!(nice_of(gpid as u32), lower, "the grandchild");
    drop(p);
    assert!(gone(gpid).await, "grandchild {gpid} survived the drop");
}
