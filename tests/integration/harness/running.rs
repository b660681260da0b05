//! [`Running`]: an `offsite` run in the background, bounded by a deadline and killed on drop;
//! [`OutputExt`]: what a test asks of a finished run (exit code, stdout, stderr, JSON).

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// How long one `offsite` run may take before the harness kills it and fails the test.
const RUN_DEADLINE: Duration = Duration::from_secs(180);

/// An offsite run in the background. Dropping it kills the process if it still runs.
pub struct Running {
    child: Child,
    out: Option<std::thread::JoinHandle<Vec<u8>>>,
    err: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl Running {
    pub(super) fn spawn(mut c: Command) -> Running {
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().expect("start offsite");
        let out = child.stdout.take().map(drain);
        let err = child.stderr.take().map(drain);
        Running { child, out, err }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the exit (killing the process after [`RUN_DEADLINE`]) and collects output.
    pub fn wait(mut self) -> Output {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait for offsite") {
                break s;
            }
            if start.elapsed() > RUN_DEADLINE {
                let _ = self.child.kill();
                let status = self.child.wait().unwrap();
                let out = self.collect(status);
                panic!(
                    "offsite ran longer than {RUN_DEADLINE:?} and was killed\nstderr:\n{}",
                    out.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        self.collect(status)
    }

    fn collect(&mut self, status: ExitStatus) -> Output {
        let join = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
            h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
        };
        Output {
            status,
            stdout: join(self.out.take()),
            stderr: join(self.err.take()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

/// What a test asks of an offsite run's [`Output`].
pub trait OutputExt {
    /// The exit code (-1 if killed by a signal).
    fn code(&self) -> i32;
    fn stdout_text(&self) -> String;
    fn stderr_text(&self) -> String;
    /// Fails the test, printing stdout and stderr, unless the exit code is `code`.
    fn assert_exit(&self, code: i32) -> &Self;
    /// stdout parsed as one JSON document.
    fn json(&self) -> serde_json::Value;
}

impl OutputExt for Output {
    fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    fn assert_exit(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            code,
            "unexpected exit code\n--- stdout:\n{}\n--- stderr:\n{}",
            self.stdout_text(),
            self.stderr_text()
        );
        self
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout_text()))
    }
}
