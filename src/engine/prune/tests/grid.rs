//! The retention grid (`keep_daily` and friends) over backups made at chosen times: the
//! injected clock is the backup ids' time stamps.

use super::*;

/// A backup id made at `stamp` (`YYYYMMDDTHHMMSS`).
fn at(stamp: &str, kind: BackupKind) -> BackupId {
    let k = if kind == BackupKind::Full {
        "full"
    } else {
        "incr"
    };
    BackupId::parse(&format!("{stamp}Z-{k}")).unwrap()
}

fn complete(id: &BackupId, parent: Option<&BackupId>) -> Seen {
    Seen::Complete {
        id: id.clone(),
        parent: parent.cloned(),
        restorable: true,
    }
}

/// One full backup a day at 02:00 from 2026-01-01 for `days` days.
fn daily_fulls(days: u32) -> Vec<BackupId> {
    (0..days)
        .map(|d| {
            let t = std::time::UNIX_EPOCH
                + std::time::Duration::from_secs((20_454 + d as u64) * 86_400 + 7_200);
            at(&layout::utc_stamp(t)[..15], BackupKind::Full)
        })
        .collect()
}

fn grid(daily: u32, weekly: u32, monthly: u32, yearly: u32) -> Retention {
    Retention {
        chains: None,
        grid: Grid {
            daily,
            weekly,
            monthly,
            yearly,
        },
    }
}

fn stamps(ids: &[BackupId]) -> Vec<&str> {
    ids.iter().map(|i| &i.stamp()[..8]).collect()
}

#[test]
fn a_year_of_daily_backups_thins_to_the_grid() {
    let ids = daily_fulls(400);
    assert_eq!(ids[0].stamp(), "20260101T020000Z");
    let seen: Vec<Seen> = ids.iter().map(|i| complete(i, None)).collect();
    let p = plan_with(&seen, &grid(7, 4, 6, 2));
    // 2027-02-04 is the newest: the last 7 days, the Sundays of the 4 newest ISO weeks (this
    // one's newest day so far), the last days of the 6 newest months (February 2027 back to
    // September 2026) and of the 2 newest years.
    let kept = stamps(&p.keep);
    assert_eq!(
        kept,
        [
            "20260930", "20261031", "20261130", "20261231", "20270117", "20270124", "20270131",
            "20270129", "20270130", "20270201", "20270202", "20270203", "20270204"
        ]
        .iter()
        .copied()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
    );
    assert_eq!(p.delete.len(), 400 - p.keep.len());
    let newest = ids.last().unwrap();
    assert_eq!(
        p.reasons[newest],
        [
            "daily 2027-02-04",
            "weekly 2027-W05",
            "monthly 2027-02",
            "yearly 2027"
        ]
    );
    assert_eq!(p.reasons[&ids[364]], ["monthly 2026-12", "yearly 2026"]);
}

#[test]
fn periods_without_backups_do_not_use_up_the_count() {
    // Backups stopped: three in March, nothing since. keep_daily = 2 keeps the two newest days
    // that have a backup, however old.
    let a = at("20260301T020000", BackupKind::Full);
    let b = at("20260302T020000", BackupKind::Full);
    let b2 = at("20260302T140000", BackupKind::Full);
    let c = at("20260305T020000", BackupKind::Full);
    let seen: Vec<Seen> = [&a, &b, &b2, &c]
        .iter()
        .map(|i| complete(i, None))
        .collect();
    let p = plan_with(&seen, &grid(2, 0, 0, 0));
    assert_eq!(
        p.keep,
        vec![b2.clone(), c.clone()],
        "the newest of each day"
    );
    assert_eq!(p.delete, vec![a, b]);
}

#[test]
fn a_kept_incremental_keeps_its_chain_and_says_why() {
    let f = at("20260101T020000", BackupKind::Full);
    let i1 = at("20260102T020000", BackupKind::Incremental);
    let i2 = at("20260103T020000", BackupKind::Incremental);
    let old = at("20251201T020000", BackupKind::Full);
    let seen = vec![
        complete(&old, None),
        complete(&f, None),
        complete(&i1, Some(&f)),
        complete(&i2, Some(&i1)),
    ];
    let p = plan_with(&seen, &grid(1, 0, 0, 0));
    assert_eq!(p.keep, vec![f.clone(), i1.clone(), i2.clone()]);
    assert_eq!(p.delete, vec![old]);
    assert_eq!(p.reasons[&i2], ["daily 2026-01-03"]);
    assert_eq!(p.reasons[&i1], [format!("parent of {i2}")]);
    assert_eq!(p.reasons[&f], [format!("parent of {i1}")]);
}

#[test]
fn keep_chains_and_the_grid_combine() {
    let ids = daily_fulls(10);
    let seen: Vec<Seen> = ids.iter().map(|i| complete(i, None)).collect();
    let p = plan_with(
        &seen,
        &Retention {
            chains: NonZeroU32::new(2),
            grid: Grid {
                monthly: 1,
                ..Grid::default()
            },
        },
    );
    assert_eq!(p.keep, ids[8..].to_vec());
    assert_eq!(p.reasons[&ids[9]], ["keep_chains", "monthly 2026-01"]);
    assert_eq!(p.reasons[&ids[8]], ["keep_chains"]);
}

#[test]
fn the_grid_never_deletes_the_only_restorable_backup_for_a_newer_damaged_one() {
    let a = at("20260101T020000", BackupKind::Full);
    let b = at("20260102T020000", BackupKind::Full);
    let seen = vec![
        complete(&a, None),
        Seen::Complete {
            id: b.clone(),
            parent: None,
            restorable: false,
        },
    ];
    let p = plan_with(&seen, &grid(1, 0, 0, 0));
    assert!(p.delete.is_empty(), "{p:?}");
    assert_eq!(p.unrestorable, vec![b]);
}

#[test]
fn iso_weeks_cross_new_year() {
    // 2026-12-31 is a Thursday: week 53 of 2026; 2027-01-03 (Sunday) is in it too.
    let ids = [
        at("20261228T020000", BackupKind::Full),
        at("20270103T020000", BackupKind::Full),
        at("20270104T020000", BackupKind::Full),
    ];
    let seen: Vec<Seen> = ids.iter().map(|i| complete(i, None)).collect();
    let p = plan_with(&seen, &grid(0, 2, 0, 0));
    assert_eq!(p.reasons[&ids[2]], ["weekly 2027-W01"]);
    assert_eq!(p.reasons[&ids[1]], ["weekly 2026-W53"]);
    assert_eq!(p.delete, vec![ids[0].clone()]);
}
