//! The retention grid: `keep_daily`, `keep_weekly`, `keep_monthly`, `keep_yearly`, as restic's
//! `forget --keep-daily` and sanoid's templates read them: for each of the N most recent days
//! (weeks, months, years) that have a backup, the newest backup of that day is kept. Periods are
//! UTC calendar days, ISO weeks (Monday to Sunday), calendar months and years of the backup
//! id's time stamp, so the same backups give the same answer on every host. A period with no
//! backup does not use up one of the N, so a dataset whose backups stopped keeps its last ones.
//!
//! Pure: no clock. "Now" is the newest backup: retention never deletes the newest backups
//! because the clock moved on.

pub use crate::config::Grid;

use crate::layout::{self, BackupId};
use std::collections::BTreeMap;

/// The period of `id` for `rule`, as shown in reports: `2026-11-21`, `2026-W47`, `2026-11`,
/// `2026`.
fn period(id: &BackupId, rule: &str) -> String {
    let s = id.stamp();
    match rule {
        "daily" => format!("{}-{}-{}", &s[0..4], &s[4..6], &s[6..8]),
        "weekly" => iso_week(id),
        "monthly" => format!("{}-{}", &s[0..4], &s[4..6]),
        _ => s[0..4].to_string(),
    }
}

/// The ISO week of `id`'s day: `2026-W47` (the year the week's Thursday falls in).
fn iso_week(id: &BackupId) -> String {
    let s = id.stamp();
    let n = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap_or(1);
    let days = layout::days_from_civil(n(0..4) as i64, n(4..6), n(6..8));
    // 1970-01-01 was a Thursday; weekday 0 is Monday.
    let thursday = days - (days + 3).rem_euclid(7) + 3;
    let (year, _, _) = layout::civil_from_days(thursday);
    let week = (thursday - layout::days_from_civil(year, 1, 1)) / 7 + 1;
    format!("{year}-W{week:02}")
}

/// The backups among `candidates` the grid keeps, each with the rules that keep it
/// (`daily 2026-11-21`).
pub fn kept<'a>(candidates: &[&'a BackupId], grid: &Grid) -> BTreeMap<&'a BackupId, Vec<String>> {
    let mut newest_first: Vec<&BackupId> = candidates.to_vec();
    newest_first.sort_unstable_by(|a, b| b.cmp(a));
    let mut out: BTreeMap<&BackupId, Vec<String>> = BTreeMap::new();
    for (rule, n) in grid.rules() {
        let mut periods: Vec<String> = Vec::new();
        for id in &newest_first {
            let p = period(id, rule);
            if periods.last() == Some(&p) {
                continue;
            }
            if periods.len() == n as usize {
                break;
            }
            out.entry(*id).or_default().push(format!("{rule} {p}"));
            periods.push(p);
        }
    }
    out
}
