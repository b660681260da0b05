//! Planning a restore and the entry point: what a target already holds is skipped, a target
//! that cannot take the backups is refused before anything is received, and [`restore`]
//! reports what it did.

use super::*;
use crate::engine::chain::TargetKind;
use crate::engine::restore::plan::TargetHolds;
use crate::error::ConfigError;
use std::collections::BTreeSet;

const I1: &str = "20261102T020000Z-incr";
const I2: &str = "20261103T020000Z-incr";

/// A full backup and two incrementals on `ps`, with the given source kind.
fn three_links(ps: &[Arc<MemoryProvider>], source_kind: &str) {
    let chain = [(FULL, None), (I1, Some(FULL)), (I2, Some(I1))];
    for (seed, (id, parent)) in chain.into_iter().enumerate() {
        let bytes = data(1500, 20 + seed as u8);
        let mut m = manifest_for(id, &bytes, 1000, parent);
        m.source_kind = source_kind.into();
        for p in ps {
            store(&[p], &m, &bytes);
        }
    }
}

async fn catalog(ps: &[Arc<MemoryProvider>]) -> Catalog {
    Catalog::scan(&dyns(ps), HOST, Some(DATASET)).await
}

fn target(t: &str) -> Destination {
    Destination::Target {
        target: t.into(),
        force: false,
        flags: Vec::new(),
    }
}

#[tokio::test]
async fn the_links_a_target_holds_are_skipped_up_to_the_newest_it_has() {
    let ps = mems(1);
    three_links(&ps, "zfs");
    let mut links = links(&dyns(&ps), Selector::Newest, true).await.unwrap();
    let holds = TargetHolds {
        receiver: ReceiverSpec::Stdout,
        kind: TargetKind::Zfs,
        // The middle snapshot is there: the full one before it counts as held too.
        present: BTreeSet::from([format!("offsite-{I1}")]),
    };
    let skipped = holds.trim("tank/restored", &mut links);
    assert_eq!(skipped, [FULL, I1]);
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].manifest.backup_id, I2);
}

#[tokio::test]
async fn an_empty_btrfs_directory_takes_the_whole_chain() {
    let ps = mems(1);
    three_links(&ps, "btrfs");
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().to_str().unwrap();
    let p = plan(
        &catalog(&ps).await,
        HOST,
        DATASET,
        &Selector::Newest,
        &target(t),
    )
    .await
    .unwrap();
    assert_eq!(p.chosen, I2);
    assert_eq!(p.links.len(), 3);
    assert!(p.skipped.is_empty());
    let expected = ReceiverSpec::Btrfs {
        dir: dir.path().to_path_buf(),
        flags: Vec::new(),
    };
    assert_eq!(p.receiver, expected);
}

#[tokio::test]
async fn a_target_that_cannot_take_the_backups_is_a_usage_error() {
    let ps = mems(1);
    three_links(&ps, "command");
    let c = catalog(&ps).await;
    let e = plan(&c, HOST, DATASET, &Selector::Newest, &target("x"))
        .await
        .unwrap_err();
    assert!(e.is::<ConfigError>(), "{e}");
    assert!(e.to_string().contains("not a zfs or btrfs stream"), "{e}");

    let ps = mems(1);
    three_links(&ps, "btrfs");
    let missing = tempfile::tempdir().unwrap().path().join("gone");
    let t = target(missing.to_str().unwrap());
    let e = plan(&catalog(&ps).await, HOST, DATASET, &Selector::Newest, &t)
        .await
        .unwrap_err();
    assert!(e.is::<ConfigError>(), "{e}");
    assert!(e.to_string().contains("not a directory"), "{e}");
}

#[tokio::test]
async fn a_raw_restore_applies_only_the_chosen_backup_and_reports_it() {
    let ps = mems(2);
    three_links(&ps, "zfs");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("restored.bin");
    let req = RestoreRequest {
        host: HOST.into(),
        dataset: DATASET.into(),
        selector: Selector::Backup(I1.into()),
        destination: Destination::Raw(ReceiverSpec::File(out.clone())),
        keys: KeySource::none(),
    };
    let settings = FetchSettings {
        shards_in_flight: 4,
        concurrency: 2,
        piece_size: None,
    };
    let progress: Arc<dyn Progress> = Arc::new(NoProgress);
    let c = catalog(&ps).await;
    let report = restore(
        &req,
        dyns(&ps),
        &c,
        settings,
        &progress,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(report.backup_id, I1);
    assert_eq!(report.applied, [I1]);
    assert!(report.skipped.is_empty());
    assert_eq!(report.total_bytes, 1500);
    assert_eq!(report.destination, format!("file {}", out.display()));
    assert_eq!(report.providers.len(), 2);
    let delivered: u64 = report.providers.iter().map(|p| p.bytes).sum();
    assert_eq!(delivered, 1500);
    assert!(std::fs::read(&out).unwrap() == data(1500, 21));
}
