//! The user reference in `docs/` tells the truth: every `--json` document documented in
//! docs/json.md is what the command prints (the same top-level keys, and no nested key the
//! page does not show), every command's document is there, and no link in README.md or docs/
//! points at a file or heading that is not in the repository.

use crate::harness::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// docs/json.md's examples: each `## \`offsite ... --json\`` heading with the first json block
/// under it.
fn documented() -> BTreeMap<String, Value> {
    let text = std::fs::read_to_string(repo().join("docs/json.md")).unwrap();
    let mut out = BTreeMap::new();
    for section in text.split("\n## ").skip(1) {
        let heading = section
            .lines()
            .next()
            .unwrap()
            .trim_matches('`')
            .to_string();
        let block = section
            .split("```json\n")
            .nth(1)
            .and_then(|b| b.split("\n```").next())
            .unwrap_or_else(|| panic!("docs/json.md: {heading:?} has no json example"));
        let value = serde_json::from_str(block)
            .unwrap_or_else(|e| panic!("docs/json.md: {heading:?}'s example is not JSON: {e}"));
        out.insert(heading, value);
    }
    out
}

/// Keys whose objects map data (provider names, backup ids) rather than a shape.
const MAPS: [&str; 2] = ["freed", "kept_because"];

/// Every key of `real`, at any depth, that the documented example `doc` does not show, as paths.
fn undocumented(real: &Value, doc: &Value, path: &str, out: &mut Vec<String>) {
    match (real, doc) {
        (Value::Object(r), Value::Object(d)) => {
            for (k, v) in r {
                let p = format!("{path}.{k}");
                match d.get(k) {
                    None => out.push(p),
                    Some(_) if MAPS.contains(&k.as_str()) => {}
                    Some(dv) => undocumented(v, dv, &p, out),
                }
            }
        }
        (Value::Array(r), Value::Array(d)) => {
            // The documented elements together show every key an element may have.
            let mut merged = serde_json::Map::new();
            for e in d.iter().filter_map(Value::as_object) {
                merged.extend(e.clone());
            }
            let merged = Value::Object(merged);
            for e in r.iter().filter(|e| e.is_object()) {
                undocumented(e, &merged, &format!("{path}[]"), out);
            }
        }
        (Value::Object(_), _) if !doc.is_null() => out.push(format!("{path} (an object)")),
        _ => {}
    }
}

fn top_keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

/// Three local providers and a fourth, disabled, to migrate to; a mirrored dataset with
/// retention and an erasure-coded one, both backed up.
fn env() -> Env {
    let (mut env, _) = command_env(3, "db", 61);
    let media = env.path().join("media.bin");
    write_pseudo_random(&media, 62, 2_500_000);
    let p4 = env.path().join("remotes/p4").display().to_string();
    env.command_dataset("media", &format!("cat {}", media.display()))
        .dataset_set("media", "erasure", "2+1")
        .dataset_set("db", "keep_chains", 1)
        .provider("p4", &p4)
        .provider_set("p4", "enabled", false);
    env
}

#[test]
fn every_json_document_has_the_keys_docs_json_md_shows() {
    let env = env();
    let key = env.path().join("offsite.key").display().to_string();
    let out = env.path().join("db.out").display().to_string();
    let fresh = env.path().join("fresh/offsite.toml").display().to_string();
    let runs: Vec<(&str, Vec<&str>, i32)> = vec![
        ("offsite backup --json", vec!["backup", "--once"], 0),
        (
            "offsite backup --dry-run --json",
            vec!["backup", "--once", "--dry-run"],
            0,
        ),
        ("offsite list --json", vec!["list"], 0),
        ("offsite hosts --json", vec!["hosts"], 0),
        ("offsite hosts --json", vec!["list", "--all-hosts"], 0),
        ("offsite init --json", vec!["init"], 0),
        ("offsite status --json", vec!["status"], 0),
        ("offsite verify --json", vec!["verify"], 0),
        ("offsite verify --json", vec!["verify", "--deep"], 0),
        (
            "offsite restore --json",
            vec!["restore", "db", "--output", &out],
            0,
        ),
        ("offsite providers --json", vec!["providers"], 0),
        ("offsite check --json", vec!["check"], 0),
        (
            "offsite keygen --output FILE --json",
            vec!["keygen", "--output", &key],
            0,
        ),
        (
            "offsite sync --dry-run --json",
            vec!["sync", "--dry-run"],
            0,
        ),
        ("offsite sync --json", vec!["sync"], 0),
        (
            "offsite sync --json",
            vec!["sync", "--migrate", "p3", "--to", "p4"],
            0,
        ),
        ("offsite prune --json", vec!["prune", "--dry-run"], 0),
        ("offsite prune --json", vec!["prune"], 0),
    ];
    let docs = documented();
    let mut problems = Vec::new();
    for (heading, args, code) in &runs {
        let Some(doc) = docs.get(*heading) else {
            problems.push(format!("docs/json.md has no section `{heading}`"));
            continue;
        };
        if args == &["sync", "--dry-run"] {
            // A gap, so that sync has something to plan and copy.
            let (name, _) = env.remote("p2").shards("db").remove(0);
            std::fs::remove_file(env.remote("p2").only_backup("db").join(name)).unwrap();
        }
        let mut argv = args.clone();
        argv.push("--json");
        let o = match args[0] {
            // The env's own config exists: init writes a fresh one elsewhere.
            "init" => std::process::Command::new(env!("CARGO_BIN_EXE_offsite"))
                .args(["--config", &fresh, "init", "--json"])
                .output()
                .unwrap(),
            _ => env.offsite(&argv),
        };
        o.assert_exit(*code);
        let real = o.json();
        if top_keys(&real) != top_keys(doc) {
            problems.push(format!(
                "`offsite {}`: top-level keys {:?}, docs/json.md `{heading}` shows {:?}",
                argv.join(" "),
                top_keys(&real),
                top_keys(doc)
            ));
        }
        let mut missing = Vec::new();
        undocumented(&real, doc, "", &mut missing);
        let missing: BTreeSet<String> = missing.into_iter().collect();
        for m in missing {
            problems.push(format!(
                "`offsite {}`: {m} is not in docs/json.md",
                argv.join(" ")
            ));
        }
    }
    let run: BTreeSet<&str> = runs.iter().map(|r| r.0).collect();
    for heading in docs.keys().filter(|h| !run.contains(h.as_str())) {
        problems.push(format!(
            "docs/json.md documents `{heading}`, which this test never runs"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// GitHub's anchor for a heading: lower case, punctuation but `-` and `_` dropped, spaces to `-`.
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(file: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut in_code = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#').trim()));
        }
    }
    out
}

/// `](target)` links outside code blocks.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        for part in line.split("](").skip(1) {
            if let Some(end) = part.find(')') {
                out.push(part[..end].to_string());
            }
        }
    }
    out
}

#[test]
fn links_in_readme_and_docs_point_at_files_and_headings_in_the_repository() {
    let mut files = vec![repo().join("README.md")];
    for e in std::fs::read_dir(repo().join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p);
        }
    }
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let name = file.strip_prefix(repo()).unwrap().display().to_string();
        for gone in ["../shared", "INTERFACE.md", "STYLE.md"] {
            if text.contains(gone) {
                problems.push(format!(
                    "{name} mentions {gone}, which is not in the repository"
                ));
            }
        }
        for link in links(&text) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            if !target.exists() {
                problems.push(format!("{name}: link {link} points at no file"));
            } else if !anchor.is_empty() && !anchors(&target).contains(anchor) {
                problems.push(format!("{name}: link {link} points at no heading"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
