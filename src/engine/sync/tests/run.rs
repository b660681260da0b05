//! The entry point: a dry run writes nothing, a migration ends with the source emptied, and a
//! late failure comes back next to the report of what was done.

use super::*;

fn migrate_a_to_d() -> Mode {
    Mode::Migrate {
        from: "a".into(),
        to: "d".into(),
    }
}

pub(super) async fn run_sync(s: &Setup, mode: Mode, dry_run: bool, remove_source: bool) -> SyncRun {
    let providers = s.providers();
    let progress: Arc<dyn Progress> = Arc::new(NoProgress);
    let cancel = CancellationToken::new();
    let cx = SyncContext {
        cfg: &s.cfg,
        providers: &providers,
        progress: &progress,
        cancel: &cancel,
    };
    let req = SyncRequest {
        mode,
        datasets: &[],
        deep: false,
        dry_run,
        remove_source,
    };
    run(&cx, &req).await.unwrap()
}

pub(super) fn done(r: SyncRun) -> (SyncReport, anyhow::Result<()>) {
    match r {
        SyncRun::Done(report, late) => (report, late),
        SyncRun::Planned(p) => panic!("a dry run: {p:?}"),
    }
}

#[tokio::test]
async fn a_dry_run_reports_the_plan_and_writes_nothing() {
    let s = Setup::new();
    s.damage();
    let SyncRun::Planned(p) = run_sync(&s, Mode::All, true, false).await else {
        panic!("not a dry run");
    };
    assert!(p.dry_run && p.copied.is_empty());
    assert!(s.mems.iter().all(|m| m.ops().is_empty()), "nothing written");
    let to_a: Vec<&str> = p
        .planned
        .iter()
        .filter(|c| c.to == "a")
        .map(|c| c.object.as_str())
        .collect();
    let want = [
        s.manifest.shards[0].name(Default::default()),
        s.manifest.shards[2].name(Default::default()),
    ];
    assert_eq!(to_a, [want[0].as_str(), want[1].as_str(), MANIFEST]);
    let manifest = p.planned.iter().find(|c| c.object == MANIFEST).unwrap();
    assert_eq!(manifest.bytes, None, "a manifest's size is not planned");
}

#[tokio::test]
async fn a_migration_with_remove_source_verifies_then_empties_the_source() {
    let s = Setup::new();
    let (report, late) = done(run_sync(&s, migrate_a_to_d(), false, true).await);
    late.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(
        report.migration,
        Some(MigrationSummary {
            verified_backups: 1,
            removed_objects: Some(4),
        })
    );
    assert!(s.mem("a").paths().is_empty(), "{:?}", s.mem("a").paths());
    assert_eq!(s.mem("d").object(&s.shard(2)).unwrap(), SHARDS[2]);
}

#[tokio::test]
async fn a_failed_removal_of_the_source_comes_back_with_the_report() {
    let s = Setup::new();
    s.mem("a").inject(Fault {
        op: "delete",
        path_contains: shard_name(0, 0),
        kind: crate::error::ErrorKind::Permanent,
        times: u32::MAX,
    });
    let (report, late) = done(run_sync(&s, migrate_a_to_d(), false, true).await);
    let err = late.unwrap_err().to_string();
    assert!(
        err.contains("1 object(s) could not be deleted from a"),
        "{err}"
    );
    assert_eq!(report.copied.len(), 4, "three shards and the manifest");
    let migration = report.migration.unwrap();
    assert_eq!(migration.verified_backups, 1);
    assert_eq!(migration.removed_objects, Some(3));
}

#[tokio::test]
async fn a_migration_without_remove_source_leaves_the_source_alone() {
    let s = Setup::new();
    let (report, late) = done(run_sync(&s, migrate_a_to_d(), false, false).await);
    late.unwrap();
    assert_eq!(report.migration.unwrap().removed_objects, None);
    assert_eq!(s.mem("a").paths().len(), 4);
    assert!(s.mem("a").ops().is_empty(), "a is only read");
}

#[tokio::test]
async fn an_unlistable_provider_is_reported_by_a_full_sync_and_fails_a_repair_of_it() {
    let s = Setup::new();
    s.mem("c").inject(Fault {
        op: "list",
        path_contains: String::new(),
        kind: crate::error::ErrorKind::Permanent,
        times: u32::MAX,
    });
    let (report, late) = done(run_sync(&s, Mode::All, false, false).await);
    late.unwrap();
    assert_eq!(report.unreachable, vec!["c".to_string()]);

    let providers = s.providers();
    let progress: Arc<dyn Progress> = Arc::new(NoProgress);
    let cancel = CancellationToken::new();
    let cx = SyncContext {
        cfg: &s.cfg,
        providers: &providers,
        progress: &progress,
        cancel: &cancel,
    };
    let req = SyncRequest {
        mode: Mode::Repair("c".into()),
        datasets: &[],
        deep: false,
        dry_run: false,
        remove_source: false,
    };
    let err = run(&cx, &req).await.unwrap_err().to_string();
    assert!(err.starts_with("provider c could not be listed"), "{err}");
}
