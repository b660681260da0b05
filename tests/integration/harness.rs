//! The shared harness of the integration tests: a temporary setup ([`Env`]) holding
//! `offsite.toml`, `providers.d/` and local-directory providers, a runner for the real `offsite`
//! binary, readers for what landed on a provider ([`RemoteDir`]), a deterministic data generator,
//! and fixtures for an rclone server, a zfs-fuse pool and a loop-mounted btrfs (submodules).
//!
//! Guarantees: every fixture cleans up in `Drop`, so a failing test leaves no server, pool or
//! mount behind; no helper sleeps in place of synchronisation (helpers that wait poll a
//! condition with a deadline); every `offsite` run is bounded by a deadline and killed after it.
//!
//! Declare fixtures *after* the [`Env`] whose directory they live in, so that they are dropped
//! first (locals drop in reverse order).
#![allow(dead_code)] // shared by several test modules; not each uses every helper

mod btrfs;
mod procs;
mod remote;
mod running;
mod server;
mod terminal;
mod zfs;

pub use btrfs::BtrfsMount;
#[allow(unused_imports)] // for the test modules
pub use procs::{descendants_of, is_alive, poll, processes_with_env, wait_for};
pub use remote::{assert_same_bytes, assert_same_tree, RemoteDir};
pub use running::{OutputExt, Running};
pub use server::RcloneServer;
pub use zfs::ZfsPool;

use offsite::layout::{dataset_key, MANIFEST};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use tempfile::TempDir;

/// The `host` every [`Env`] sets, i.e. the first folder on every remote.
pub const HOST: &str = "testhost";

/// The environment variable that marks every process a test's `offsite` runs start.
const MARKER: &str = "OFFSITE_TEST_ENV";

/// A temporary offsite setup. Every builder method rewrites `offsite.toml` and `providers.d/`
/// at once; write a file by hand with [`Env::write_file`] *after* the last builder call.
///
/// Defaults: `host = "testhost"`, `state_dir = "state"` (not created: a config error must not
/// create it), `shard_size = "1MiB"`, `retry_delay = "10ms"`, the real rclone, and providers
/// `p1..pN` at `remotes/pN` with priority N.
pub struct Env {
    dir: TempDir,
    top: toml::Table,
    datasets: Vec<toml::Table>,
    providers: BTreeMap<String, toml::Table>,
    vars: Vec<(String, String)>,
}

impl Env {
    pub fn new(providers: usize) -> Env {
        let dir = tempfile::Builder::new()
            .prefix("offsite-it-")
            .tempdir()
            .expect("create a temp dir");
        std::fs::create_dir(dir.path().join("providers.d")).unwrap();
        let mut env = Env {
            dir,
            top: toml::Table::new(),
            datasets: Vec::new(),
            providers: BTreeMap::new(),
            vars: Vec::new(),
        };
        env.set("host", HOST)
            .set("state_dir", "state")
            .set("shard_size", "1MiB")
            .set("retry_delay", "10ms")
            .set("rclone", real_rclone().display().to_string());
        for i in 1..=providers {
            let remote = env.path().join(format!("remotes/p{i}"));
            env.provider(&format!("p{i}"), &remote.display().to_string())
                .provider_set(&format!("p{i}"), "priority", i as i64);
        }
        env
    }

    /// Sets a top-level key of `offsite.toml`.
    pub fn set(&mut self, key: &str, value: impl Into<toml::Value>) -> &mut Self {
        self.top.insert(key.to_string(), value.into());
        self.write_config()
    }

    pub fn unset(&mut self, key: &str) -> &mut Self {
        self.top.remove(key);
        self.write_config()
    }

    /// Adds a `[[dataset]]` backed by a shell command.
    pub fn command_dataset(&mut self, name: &str, command: &str) -> &mut Self {
        self.dataset(name, "command", command.into())
    }

    /// Adds a `[[dataset]]` backed by a zfs dataset (`pool/fs`).
    pub fn zfs_dataset(&mut self, name: &str, fs: &str) -> &mut Self {
        self.dataset(name, "zfs", fs.into())
    }

    /// Adds a `[[dataset]]` backed by a btrfs subvolume, snapshots going to `snapshot_dir`.
    pub fn btrfs_dataset(
        &mut self,
        name: &str,
        subvolume: &Path,
        snapshot_dir: Option<&Path>,
    ) -> &mut Self {
        self.dataset(name, "btrfs", subvolume.display().to_string().into());
        if let Some(s) = snapshot_dir {
            self.dataset_set(name, "snapshot_dir", s.display().to_string());
        }
        self.write_config()
    }

    fn dataset(&mut self, name: &str, kind: &str, source: toml::Value) -> &mut Self {
        let mut t = toml::Table::new();
        t.insert("name".into(), name.into());
        t.insert(kind.into(), source);
        self.datasets.push(t);
        self.write_config()
    }

    /// Sets a key of the dataset called `name` (e.g. `providers`, or a second source).
    pub fn dataset_set(
        &mut self,
        name: &str,
        key: &str,
        value: impl Into<toml::Value>,
    ) -> &mut Self {
        let t = self
            .datasets
            .iter_mut()
            .find(|t| t.get("name").and_then(|v| v.as_str()) == Some(name))
            .unwrap_or_else(|| panic!("no dataset {name:?} in this Env"));
        t.insert(key.into(), value.into());
        self.write_config()
    }

    /// Adds (or replaces) `providers.d/NAME.toml` with `remote`, any rclone remote path.
    pub fn provider(&mut self, name: &str, remote: &str) -> &mut Self {
        let mut t = toml::Table::new();
        t.insert("remote".into(), remote.into());
        self.providers.insert(name.to_string(), t);
        self.write_config()
    }

    pub fn provider_set(
        &mut self,
        name: &str,
        key: &str,
        value: impl Into<toml::Value>,
    ) -> &mut Self {
        self.providers
            .get_mut(name)
            .unwrap_or_else(|| panic!("no provider {name:?} in this Env"))
            .insert(key.into(), value.into());
        self.write_config()
    }

    pub fn remove_provider(&mut self, name: &str) -> &mut Self {
        self.providers.remove(name);
        self.write_config()
    }

    /// Sets an environment variable for every later `offsite` run.
    pub fn var(&mut self, key: &str, value: &str) -> &mut Self {
        self.vars.retain(|(k, _)| k != key);
        self.vars.push((key.into(), value.into()));
        self
    }

    /// Uses `tests/mock_rclone` (passing through to the real rclone) with its log at
    /// [`Env::mock_log`] and its rules at `mock.rules` (see [`Env::mock_rules`]). The mock
    /// sees and faults one rclone per operation, so offsite runs without its rclone daemon
    /// (`OFFSITE_RCLONE_DAEMON=0`).
    pub fn use_mock_rclone(&mut self) -> &mut Self {
        let dir = self.path().to_path_buf();
        let real = real_rclone().display().to_string();
        self.var("OFFSITE_RCLONE_DAEMON", "0")
            .var("MOCK_RCLONE_REAL", &real)
            .var(
                "MOCK_RCLONE_LOG",
                &dir.join("mock.log").display().to_string(),
            )
            .var(
                "MOCK_RCLONE_RULES",
                &dir.join("mock.rules").display().to_string(),
            )
            .var(
                "MOCK_RCLONE_STATE",
                &dir.join("mock.state").display().to_string(),
            )
            .set("rclone", mock_rclone().display().to_string())
    }

    /// Writes the mock's fault rules (`SUBCMD GLOB ACTION COUNT` per line).
    pub fn mock_rules(&self, rules: &str) {
        std::fs::write(self.path().join("mock.rules"), rules).unwrap();
    }

    /// The mock's log: one `<subcommand> <target>` line per rclone invocation.
    pub fn mock_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.path().join("mock.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Writes `offsite.toml` and `providers.d/*.toml` from the builder's state.
    fn write_config(&mut self) -> &mut Self {
        let mut doc = self.top.clone();
        if !self.datasets.is_empty() {
            let list = self.datasets.iter().cloned().map(toml::Value::Table);
            doc.insert("dataset".into(), toml::Value::Array(list.collect()));
        }
        std::fs::write(self.config_path(), toml::to_string(&doc).unwrap()).unwrap();
        let pdir = self.providers_dir();
        for e in std::fs::read_dir(&pdir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                std::fs::remove_file(p).unwrap();
            }
        }
        for (name, t) in &self.providers {
            let text = toml::to_string(t).unwrap();
            std::fs::write(pdir.join(format!("{name}.toml")), text).unwrap();
        }
        self
    }

    /// Writes a file relative to the Env's directory (e.g. a broken `providers.d/x.toml`).
    pub fn write_file(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path().join(rel);
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.path().join("offsite.toml")
    }

    pub fn providers_dir(&self) -> PathBuf {
        self.path().join("providers.d")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path().join("state")
    }

    /// The lock file offsite keeps for `dataset` while it works on it.
    pub fn lock_file(&self, dataset: &str) -> PathBuf {
        self.state_dir()
            .join("locks")
            .join(HOST)
            .join(format!("{}.lock", dataset_key(dataset)))
    }

    /// What a local provider holds (its remote, without a `:local:` prefix).
    pub fn remote(&self, provider: &str) -> RemoteDir {
        let remote = self.providers[provider]["remote"].as_str().unwrap();
        RemoteDir::new(remote.strip_prefix(":local:").unwrap_or(remote))
    }

    /// Every `manifest.json` under `remotes/` (the local providers' folders).
    pub fn manifests_anywhere(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        remote::walk(&self.path().join("remotes"), &mut |p| {
            if p.file_name().is_some_and(|n| n == MANIFEST) {
                found.push(p.to_path_buf());
            }
        });
        found
    }

    /// The command that runs `offsite --config ... --no-progress ARGS`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut all = vec!["--no-progress"];
        all.extend_from_slice(args);
        self.command_with_progress(&all)
    }

    /// The command that runs `offsite --config ... ARGS`, progress reporting left on.
    pub fn command_with_progress(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_offsite"));
        c.arg("--config")
            .arg(self.config_path())
            .args(args)
            .current_dir(self.path())
            .env_remove("AWS_CA_BUNDLE")
            .env_remove("OFFSITE_CONFIG")
            .env_remove("RUST_LOG")
            .env("PATH", search_path())
            .env(MARKER, self.path())
            .stdin(Stdio::null());
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }

    /// Runs offsite to completion (bounded by a deadline) and returns what it printed.
    pub fn offsite(&self, args: &[&str]) -> Output {
        self.offsite_env(args, &[])
    }

    /// [`Env::offsite`] with extra environment variables for this run only.
    pub fn offsite_env(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        let mut c = self.command(args);
        c.envs(vars.iter().copied());
        Running::spawn(c).wait()
    }

    /// Runs `offsite ARGS` to completion with progress reporting on (stderr is a pipe, so
    /// progress is logged as lines).
    pub fn offsite_with_progress(&self, args: &[&str]) -> Output {
        Running::spawn(self.command_with_progress(args)).wait()
    }

    /// Runs `offsite ARGS` (progress on) in a pseudo-terminal of 80 columns; `watch` sees each
    /// line the terminal shows as it comes (see [`terminal::run_in_terminal`]).
    pub fn offsite_in_terminal(&self, args: &[&str], watch: impl FnMut(&str)) -> Output {
        terminal::run_in_terminal(&self.command_with_progress(args), watch)
    }

    /// Starts offsite in the background; the returned guard kills it if it is still running
    /// when dropped.
    pub fn spawn_offsite(&self, args: &[&str]) -> Running {
        Running::spawn(self.command(args))
    }

    /// Processes started by this Env's offsite runs that are still alive (not zombies), as
    /// (pid, command line). Found by an environment marker, so reparented orphans count too.
    pub fn leftover_processes(&self) -> Vec<(u32, String)> {
        processes_with_env(MARKER, &self.path().display().to_string())
    }

    /// Waits (bounded) until no process of this Env's runs is left, or fails naming them.
    pub fn assert_no_leftover_processes(&self) {
        let ok = poll(Duration::from_secs(30), || {
            self.leftover_processes().is_empty()
        });
        assert!(
            ok,
            "processes left behind by offsite: {:?}",
            self.leftover_processes()
        );
    }
}

/// `len` pseudo-random bytes from `seed` (xorshift64*): the same arguments give the same bytes.
pub const MIB: usize = 1 << 20;
/// The usual test stream: three full 1 MiB shards (the harness's `shard_size`) and a half one.
pub const SOURCE_LEN: usize = 3 * MIB + MIB / 2;

/// An Env with `n` providers and a command dataset `dataset` that cats `src.bin`, a file of
/// [`SOURCE_LEN`] pseudo-random bytes from `seed`; returns the bytes.
pub fn command_env(n: usize, dataset: &str, seed: u64) -> (Env, Vec<u8>) {
    let mut env = Env::new(n);
    let src = env.path().join("src.bin");
    let data = write_pseudo_random(&src, seed, SOURCE_LEN);
    env.command_dataset(dataset, &format!("cat {}", src.display()));
    (env, data)
}

/// [`command_env`], backed up once (`backup --once`, exit 0).
pub fn backed_up(n: usize, dataset: &str, seed: u64) -> (Env, Vec<u8>) {
    let (env, data) = command_env(n, dataset, seed);
    env.offsite(&["backup", "--once"]).assert_exit(0);
    (env, data)
}

pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes [`pseudo_random`] bytes to `path` and returns them.
pub fn write_pseudo_random(path: &Path, seed: u64, len: usize) -> Vec<u8> {
    let data = pseudo_random(seed, len);
    std::fs::write(path, &data).unwrap();
    data
}

/// The 1-based line of the first line of `file` that contains `needle`.
pub fn line_of(file: &Path, needle: &str) -> usize {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in {}:\n{text}", file.display()))
        + 1
}

/// Runs a program to completion, failing the test (with its stderr) unless it exits 0.
pub fn run(program: &str, args: &[&str]) -> String {
    run_with_input(program, args, None)
}

/// [`run`] with `input` on stdin.
/// Runs `program` to its end (at most 5 minutes: a wedged zfs-fuse must fail a test, not hang
/// the suite) and returns its stdout; panics with its stderr if it fails.
pub fn run_with_input(program: &str, args: &[&str], input: Option<&[u8]>) -> String {
    let mut c = Command::new("timeout");
    c.args(["-k", "10", "300", program])
        .args(args)
        .env("PATH", search_path())
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let writer = input.map(|data| {
        let mut stdin = child.stdin.take().unwrap();
        let data = data.to_vec();
        std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &data))
    });
    let out = child.wait_with_output().unwrap();
    if let Some(w) = writer {
        w.join()
            .unwrap()
            .unwrap_or_else(|e| panic!("writing to {program}: {e}"));
    }
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// PATH with the sbin folders (zfs, zpool, mkfs.btrfs live there).
pub fn search_path() -> String {
    let mut path = std::env::var("PATH").unwrap_or_default();
    for extra in ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        if !path.split(':').any(|p| p == extra) {
            path.push(':');
            path.push_str(extra);
        }
    }
    path
}

/// The real rclone on PATH.
pub fn real_rclone() -> PathBuf {
    which::which("rclone").expect("rclone must be installed for the integration tests")
}

/// `tests/mock_rclone`.
pub fn mock_rclone() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mock_rclone")
}

// ---- encryption (issue 11): age keys, `[encryption]`, stored bytes, the CLI recovery ----
mod crypto;
pub use crypto::{
    contains_bytes, files_under, marker_text, recover_with_age_and_zstd, stored_shards, AgeKey,
};
