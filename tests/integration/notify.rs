//! metrics_file, notify_url and notify_command as a monitor sees them: a loopback HTTP server
//! records the pings, the metrics file is read line by line, the hook writes its env to a file.

use crate::harness::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A loopback HTTP server answering 200 to everything, recording `(path, body)`; stopped on drop.
struct Monitor {
    url: String,
    seen: Arc<Mutex<Vec<(String, String)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Monitor {
    fn start() -> Monitor {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    answer(c, &s);
                }
            }
        });
        Monitor {
            url: format!("http://{addr}/ping/uuid-1"),
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn requests(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(
            self.url
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap(),
        );
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request, records its path and body, then answers 200 (recorded first: once
/// offsite has its answer, the test sees the request).
fn answer(conn: TcpStream, seen: &Mutex<Vec<(String, String)>>) -> Option<()> {
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut first = String::new();
    reader.read_line(&mut first).ok()?;
    let path = first.split_whitespace().nth(1)?.to_string();
    let mut len = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        if line.trim().is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    seen.lock()
        .unwrap()
        .push((path, String::from_utf8_lossy(&body).into_owned()));
    let mut conn = conn;
    conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .ok()
}

fn paths(reqs: &[(String, String)]) -> Vec<&str> {
    reqs.iter().map(|(p, _)| p.as_str()).collect()
}

#[test]
fn a_good_backup_pings_start_then_success_and_a_failing_one_start_then_fail() {
    let monitor = Monitor::start();
    let (mut env, _) = command_env(2, "db", 1);
    env.set("notify_url", monitor.url.as_str());
    env.offsite(&["backup", "--once"]).assert_exit(0);
    assert_eq!(
        paths(&monitor.requests()),
        ["/ping/uuid-1/start", "/ping/uuid-1"]
    );

    env.command_dataset(
        "broken",
        "echo 'pg_dumpall: connection refused' >&2; exit 7",
    );
    let out = env.offsite(&["backup", "--once", "broken"]);
    assert_eq!(out.code(), 1, "{}", out.stderr_text());
    let reqs = monitor.requests();
    assert_eq!(
        paths(&reqs[2..]),
        ["/ping/uuid-1/start", "/ping/uuid-1/fail"]
    );
    assert!(
        reqs[3].1.contains("connection refused"),
        "fail body: {:?}",
        reqs[3].1
    );
}

#[test]
fn a_dataset_with_its_own_notify_url_hears_only_about_itself_and_dry_runs_ping_nothing() {
    let monitor = Monitor::start();
    let (mut env, _) = command_env(2, "db", 2);
    env.set("notify_url", monitor.url.as_str());
    env.command_dataset("media", "echo 'tar: cannot read' >&2; exit 5")
        .dataset_set("media", "notify_url", format!("{}-media", monitor.url));
    let out = env.offsite(&["backup", "--once"]);
    assert_eq!(out.code(), 1, "{}", out.stderr_text());
    let reqs = monitor.requests();
    let mut seen = paths(&reqs);
    seen.sort();
    assert_eq!(
        seen,
        [
            "/ping/uuid-1",
            "/ping/uuid-1-media/fail",
            "/ping/uuid-1-media/start",
            "/ping/uuid-1/start"
        ],
        "db succeeded, media failed"
    );

    env.offsite(&["backup", "--dry-run", "db"]).assert_exit(0);
    env.offsite(&["prune", "--dry-run"]).assert_exit(0);
    assert_eq!(monitor.requests().len(), reqs.len(), "a dry run pinged");
}

#[test]
fn a_refused_notify_url_does_not_change_the_exit_code() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (mut env, _) = command_env(1, "db", 2);
    env.set("notify_url", format!("http://127.0.0.1:{port}/x"));
    let out = env.offsite(&["backup", "--once"]);
    out.assert_exit(0);
    assert!(
        out.stderr_text().contains("notify_url: cannot ping"),
        "{}",
        out.stderr_text()
    );
}

#[test]
fn a_notify_url_that_is_not_http_is_a_config_error() {
    let (mut env, _) = command_env(1, "db", 3);
    env.set("notify_url", "ftp://example.com/x");
    let out = env.offsite(&["status"]);
    out.assert_exit(2);
    assert!(out.stderr_text().contains("offsite.toml") && out.stderr_text().contains("notify_url"));
}

fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
}

#[test]
fn metrics_keep_the_last_success_when_a_later_run_fails() {
    let (mut env, _) = command_env(1, "db", 4);
    let prom = env.path().join("offsite.prom");
    env.set("metrics_file", prom.display().to_string());
    env.offsite(&["backup", "--once"]).assert_exit(0);
    let first = std::fs::read_to_string(&prom).unwrap();
    let success = r#"offsite_last_success_timestamp_seconds{host="testhost",dataset="db"}"#;
    let stamp = sample(&first, success)
        .expect("last success written")
        .to_string();
    assert!(first.contains("# TYPE offsite_provider_up gauge"));

    env.command_dataset("broken", "exit 9");
    assert_eq!(env.offsite(&["backup", "--once", "broken"]).code(), 1);
    let second = std::fs::read_to_string(&prom).unwrap();
    assert_eq!(sample(&second, success), Some(stamp.as_str()));
    let exit = r#"offsite_last_run_exit_code{host="testhost",command="backup"}"#;
    assert_eq!(sample(&first, exit), Some("0"));
    assert_eq!(sample(&second, exit), Some("1"));
}

#[test]
fn notify_command_gets_the_offsite_variables() {
    let (mut env, _) = command_env(1, "db", 5);
    let out_file = env.path().join("hook.env");
    env.set(
        "notify_command",
        format!(
            "env | grep ^OFFSITE_ | sort > {}; echo hook ran",
            out_file.display()
        ),
    );
    let out = env.offsite(&["backup", "--once"]);
    out.assert_exit(0);
    let vars = std::fs::read_to_string(&out_file).unwrap();
    for want in [
        "OFFSITE_EVENT=backup",
        "OFFSITE_EXIT=0",
        "OFFSITE_DATASET=db",
        "OFFSITE_HOST=testhost",
    ] {
        assert!(vars.lines().any(|l| l == want), "{want} missing in {vars}");
    }
    assert!(
        out.stderr_text().contains("hook ran"),
        "{}",
        out.stderr_text()
    );
}

#[test]
fn the_shipped_alert_rules_parse_and_cover_the_metrics() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/offsite-alerts.yml"
    ))
    .unwrap();
    yaml_shape(&text);
    for metric in [
        "offsite_last_success_timestamp_seconds",
        "offsite_last_run_exit_code",
        "offsite_provider_up",
        "offsite_missing_objects",
    ] {
        assert!(text.contains(metric), "{metric} has no alert");
    }
}

/// A YAML check without a YAML crate (promtool is not installed here): no tabs, one group,
/// every `- alert:` with its `expr:`.
fn yaml_shape(text: &str) {
    assert!(!text.contains('\t'), "tabs are not YAML indentation");
    assert!(text.starts_with("#") && text.contains("groups:\n"));
    let alerts = text.matches("- alert: ").count();
    assert_eq!(alerts, text.matches("        expr: ").count());
    assert_eq!(alerts, 4);
}

#[test]
fn metrics_name_the_backup_size_providers_up_and_missing_objects() {
    let (mut env, data) = command_env(2, "db", 6);
    let prom = env.path().join("offsite.prom");
    env.set("metrics_file", prom.display().to_string());
    env.offsite(&["backup", "--once"]).assert_exit(0);
    let text = std::fs::read_to_string(&prom).unwrap();
    let bytes = r#"offsite_backup_bytes{host="testhost",dataset="db"}"#;
    assert_eq!(sample(&text, bytes), Some(data.len().to_string().as_str()));
    let up = |p: &str| format!(r#"offsite_provider_up{{host="testhost",provider="{p}"}}"#);
    assert_eq!(sample(&text, &up("p2")), Some("1"));

    // Everything p2 held is gone: status counts its objects, p1 misses none.
    std::fs::remove_dir_all(env.path().join("remotes/p2")).unwrap();
    std::fs::create_dir_all(env.path().join("remotes/p2")).unwrap();
    env.offsite(&["status"]).assert_exit(3);
    let text = std::fs::read_to_string(&prom).unwrap();
    let missing = |p: &str| {
        format!(r#"offsite_missing_objects{{host="testhost",dataset="db",provider="{p}"}}"#)
    };
    assert_eq!(sample(&text, &missing("p1")), Some("0"));
    let shards = data.len().div_ceil(MIB);
    let want = (shards + 1).to_string(); // every shard and the manifest
    assert_eq!(sample(&text, &missing("p2")), Some(want.as_str()), "{text}");

    // p2 cannot be listed: down; its last known count is kept.
    env.use_mock_rclone();
    env.mock_rules("lsjson */remotes/p2* exit:6 inf\n");
    env.offsite(&["status"]).assert_exit(3);
    let text = std::fs::read_to_string(&prom).unwrap();
    assert_eq!(sample(&text, &up("p2")), Some("0"), "{text}");
    assert_eq!(sample(&text, &up("p1")), Some("1"));
    assert_eq!(sample(&text, &missing("p2")), Some(want.as_str()));
}
