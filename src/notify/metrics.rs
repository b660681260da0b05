//! `metrics_file`: Prometheus text format for node_exporter's textfile collector. Each run
//! reads the previous file, replaces the series it knows about and writes the whole file to a
//! temporary file in the same directory, fsynced, then renamed: a scrape never sees half a
//! file, and a `status` run does not erase what the last `backup` wrote.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// Every family written: name, type, help.
const FAMILIES: &[(&str, &str, &str)] = &[
    ("offsite_last_success_timestamp_seconds", "gauge", "Unix time of the last backup of the dataset that ended with exit 0."),
    ("offsite_last_run_exit_code", "gauge", "Exit code of the last run of the command (0 ok, 1 failed, 2 usage or config, 3 done with gaps or stale)."),
    ("offsite_last_run_timestamp_seconds", "gauge", "Unix time the last run of the command ended."),
    ("offsite_backup_bytes", "gauge", "Stream bytes of the last backup of the dataset."),
    ("offsite_provider_up", "gauge", "1 if the provider answered during the last run that used it, else 0."),
    ("offsite_missing_objects", "gauge", "Objects of the dataset's backups the provider should hold and does not."),
];

/// What one run contributes to the file.
pub struct Run<'a> {
    pub host: &'a str,
    pub command: &'a str,
    pub exit: i32,
    /// Datasets backed up successfully in this run.
    pub succeeded: &'a [String],
    /// Providers, missing objects and backup sizes the run saw.
    pub observed: &'a super::observed::Observed,
    /// Unix seconds.
    pub now: u64,
}

/// Series keyed by family, then by the rendered label set `{a="b",...}`.
pub type Series = BTreeMap<String, BTreeMap<String, String>>;

/// Escapes a label value per the text format: backslash, double quote and newline.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// The series of a previous file, for the known families only; unreadable lines are dropped.
pub fn parse(text: &str) -> Series {
    let mut out = Series::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, labels) = match key.find('{') {
            Some(i) if key.ends_with('}') => (&key[..i], &key[i..]),
            _ => (key, ""),
        };
        if FAMILIES.iter().any(|f| f.0 == name) {
            out.entry(name.to_string())
                .or_default()
                .insert(labels.to_string(), value.to_string());
        }
    }
    out
}

/// `series` with this run's samples replacing the ones with the same labels.
pub fn merge(mut series: Series, run: &Run) -> Series {
    let mut set = |family: &str, l: String, v: String| {
        series.entry(family.to_string()).or_default().insert(l, v);
    };
    let by_command = labels(&[("host", run.host), ("command", run.command)]);
    set(
        "offsite_last_run_exit_code",
        by_command.clone(),
        run.exit.to_string(),
    );
    set(
        "offsite_last_run_timestamp_seconds",
        by_command,
        run.now.to_string(),
    );
    for d in run.succeeded {
        let l = labels(&[("host", run.host), ("dataset", d)]);
        set(
            "offsite_last_success_timestamp_seconds",
            l,
            run.now.to_string(),
        );
    }
    let o = run.observed;
    for (d, bytes) in &o.backup_bytes {
        let l = labels(&[("host", run.host), ("dataset", d)]);
        set("offsite_backup_bytes", l, bytes.to_string());
    }
    for (p, up) in &o.provider_up {
        let l = labels(&[("host", run.host), ("provider", p)]);
        set("offsite_provider_up", l, u8::from(*up).to_string());
    }
    for ((d, p), n) in &o.missing_objects {
        let l = labels(&[("host", run.host), ("dataset", d), ("provider", p)]);
        set("offsite_missing_objects", l, n.to_string());
    }
    series
}

/// The file's text: HELP and TYPE for every family, then its samples.
pub fn render(series: &Series) -> String {
    let mut out = String::new();
    for (name, kind, help) in FAMILIES {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (l, v) in series.get(*name).into_iter().flatten() {
            out.push_str(&format!("{name}{l} {v}\n"));
        }
    }
    out
}

/// Reads `path` (if any), merges `run` and replaces the file atomically.
pub fn update(path: &Path, run: &Run) -> std::io::Result<()> {
    let previous = match std::fs::read_to_string(path) {
        Ok(t) => parse(&t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Series::new(),
        Err(e) => return Err(e),
    };
    let text = render(&merge(previous, run));
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::super::observed::Observed;
    use super::*;

    static NOTHING: std::sync::LazyLock<Observed> = std::sync::LazyLock::new(Observed::default);

    fn run<'a>(command: &'a str, exit: i32, ok: &'a [String], now: u64) -> Run<'a> {
        Run {
            host: "nas",
            command,
            exit,
            succeeded: ok,
            observed: &NOTHING,
            now,
        }
    }

    #[test]
    fn writes_what_the_run_observed_and_keeps_what_it_did_not() {
        let mut seen = Observed::default();
        seen.backup_bytes.insert("db".into(), 1024);
        seen.provider_up.insert("b2".into(), true);
        seen.provider_up.insert("usb".into(), false);
        seen.missing_objects.insert(("db".into(), "b2".into()), 3);
        let first = Run {
            observed: &seen,
            ..run("status", 3, &[], 10)
        };
        let text = render(&merge(Series::new(), &first));
        assert!(text.contains("offsite_backup_bytes{host=\"nas\",dataset=\"db\"} 1024\n"));
        assert!(text.contains("offsite_provider_up{host=\"nas\",provider=\"usb\"} 0\n"));
        assert!(text
            .contains("offsite_missing_objects{host=\"nas\",dataset=\"db\",provider=\"b2\"} 3\n"));
        let mut later = Observed::default();
        later.provider_up.insert("usb".into(), true);
        let second = Run {
            observed: &later,
            ..run("sync", 0, &[], 20)
        };
        let text = render(&merge(parse(&text), &second));
        assert!(text.contains("offsite_provider_up{host=\"nas\",provider=\"usb\"} 1\n"));
        assert!(text.contains("offsite_provider_up{host=\"nas\",provider=\"b2\"} 1\n"));
        assert!(text.contains("provider=\"b2\"} 3\n"), "not looked at: kept");
    }

    #[test]
    fn renders_help_type_and_escaped_labels() {
        let ok = vec!["we\"ird\\name\n".to_string()];
        let text = render(&merge(Series::new(), &run("backup", 0, &ok, 100)));
        assert!(text.contains("# HELP offsite_provider_up "));
        assert!(text.contains("# TYPE offsite_missing_objects gauge\n"));
        assert!(text.contains(
            "offsite_last_success_timestamp_seconds{host=\"nas\",dataset=\"we\\\"ird\\\\name\\n\"} 100\n"
        ));
        assert!(text.contains("offsite_last_run_exit_code{host=\"nas\",command=\"backup\"} 0\n"));
    }

    #[test]
    fn a_failed_run_keeps_the_last_success_and_other_commands() {
        let ok = vec!["db".to_string()];
        let first = render(&merge(Series::new(), &run("backup", 0, &ok, 100)));
        let second = render(&merge(parse(&first), &run("status", 3, &[], 150)));
        let third = render(&merge(parse(&second), &run("backup", 1, &[], 200)));
        assert!(third
            .contains("offsite_last_success_timestamp_seconds{host=\"nas\",dataset=\"db\"} 100\n"));
        assert!(third.contains("offsite_last_run_exit_code{host=\"nas\",command=\"backup\"} 1\n"));
        assert!(third.contains("offsite_last_run_exit_code{host=\"nas\",command=\"status\"} 3\n"));
        assert_eq!(
            parse(&third),
            parse(&render(&parse(&third))),
            "parse and render round-trip"
        );
    }

    #[test]
    fn update_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offsite.prom");
        update(&path, &run("prune", 0, &[], 5)).unwrap();
        update(&path, &run("sync", 1, &[], 6)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("command=\"prune\"} 0\n") && text.contains("command=\"sync\"} 1\n"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
