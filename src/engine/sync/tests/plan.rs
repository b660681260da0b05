//! Planning: which gaps are filled from where, and which cannot be.

use super::*;

#[tokio::test]
async fn plan_names_each_gap_with_good_sources_only() {
    let s = Setup::new();
    s.damage();
    let (catalog, surveys) = s.scan(&corrupt_c2()).await;
    let p = plan(&catalog, &surveys, &Mode::All);
    let summary: Vec<(u64, Vec<String>, Vec<String>)> = p
        .copies
        .iter()
        .map(|c| (c.index, c.sources.clone(), c.dests.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (0, vec!["b".into(), "c".into()], vec!["a".into()]),
            (1, vec!["a".into(), "c".into()], vec!["b".into()]),
            (2, vec!["b".into()], vec!["a".into(), "c".into()]),
        ]
    );
    assert_eq!(p.manifests.len(), 1);
    assert_eq!(p.manifests[0].dests, vec!["a".to_string()]);
    assert!(p.unfillable.is_empty());
    assert_eq!(p.bytes(), 4 + 4 + 2 * 2);
}

#[tokio::test]
async fn repair_plans_for_the_named_provider_only() {
    let s = Setup::new();
    s.damage();
    let (catalog, surveys) = s.scan(&corrupt_c2()).await;
    let p = plan(&catalog, &surveys, &Mode::Repair("c".into()));
    assert_eq!(p.copies.len(), 1);
    assert_eq!(p.copies[0].dests, vec!["c".to_string()]);
    assert!(p.manifests.is_empty(), "c's manifest is fine");
}

#[tokio::test]
async fn known_corrupt_everywhere_is_unfillable() {
    let s = Setup::new();
    let corrupt: Corrupt = [(
        key(),
        ["a", "b", "c"]
            .iter()
            .map(|p| (p.to_string(), [1u64].into()))
            .collect(),
    )]
    .into();
    let report = s.sync(&Mode::All, &corrupt).await;
    assert_eq!(report.failed.len(), 3);
    assert!(report.failed[0]
        .error
        .contains("no provider holds a good copy"));
    assert!(report.failed[0].error.contains(&shard_name(1, 4)));
    assert!(s.mems.iter().all(|m| m.ops().is_empty()));
}

#[test]
fn remote_names_decide_server_side_copies() {
    assert_eq!(remote_name("b2:bucket/x").as_deref(), Some("b2"));
    assert_eq!(remote_name("b2:").as_deref(), Some("b2"));
    assert_eq!(
        remote_name(":webdav,url='http://127.0.0.1:8080':").as_deref(),
        Some(":webdav,url='http://127.0.0.1:8080'")
    );
    assert_eq!(
        remote_name(":s3,provider=AWS:bucket/x").as_deref(),
        Some(":s3,provider=AWS")
    );
    assert_eq!(remote_name("/srv/offsite"), None);
    assert_eq!(remote_name("/srv/a:b"), None);
    assert_eq!(remote_name(":local:/mnt/usb"), None);
    assert_eq!(remote_name("relative/dir"), None);

    let pc = |name: &str, remote: &str, flags: &[&str]| crate::config::ProviderConfig {
        name: name.into(),
        remote: remote.into(),
        enabled: true,
        priority: 1,
        bwlimit: None,
        flags: flags.iter().map(|s| s.to_string()).collect(),
        list_hashes: crate::config::ListHashes::Never,
        max_object_size: None,
    };
    let opts = Options {
        spool_dir: None,
        host: HOST.into(),
        limits: Limits {
            shards_in_flight: 1,
            concurrency: 1,
        },
        remotes: [
            pc("x", "s3:bucket/x", &[]),
            pc("y", "s3:bucket/y", &[]),
            pc("z", "s3:bucket/z", &["--s3-acl", "private"]),
            pc("l1", "/mnt/a", &[]),
            pc("l2", "/mnt/b", &[]),
        ]
        .iter()
        .map(|p| (p.name.clone(), RemoteId::of(p)))
        .collect(),
    };
    assert_eq!(opts.route("x", "y"), Some("s3:bucket/x"));
    assert_eq!(opts.route("x", "z"), None, "different flags");
    assert_eq!(
        opts.route("l1", "l2"),
        None,
        "local disks copy through memory"
    );
    assert_eq!(opts.route("x", "unknown"), None);
}
