//! When a dataset is due, and whether its next backup is full or incremental: a pure function
//! of the clock, the schedule and what the providers hold, so every decision is unit-tested
//! with an injected clock.

use std::time::{Duration, SystemTime};

/// The schedule of one dataset (`full_every`, `incremental_every`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Schedule {
    pub full_every: Option<Duration>,
    pub incremental_every: Option<Duration>,
}

/// The complete backups of a dataset that matter for planning.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Creation time of the newest restorable full backup.
    pub last_full: Option<SystemTime>,
    /// Creation time of the newest restorable backup of any kind.
    pub last: Option<SystemTime>,
    /// Backups dated after now (the clock was wrong when they were made, or is wrong now):
    /// left out of `last_full` and `last`, so the schedule runs from now instead of waiting
    /// for that date. (backup id, its date)
    pub future: Vec<(String, SystemTime)>,
}

/// How far in the future a backup may be dated and still count normally: a clock stepped back
/// by NTP a little is not a wrong clock.
pub const FUTURE_SLACK: Duration = Duration::from_secs(300);

/// One restorable backup as the schedule sees it.
#[derive(Debug, Clone)]
pub struct Made {
    pub id: String,
    /// When it was made: its manifest's `created`, else the time in its id.
    pub time: SystemTime,
    pub full: bool,
}

impl History {
    /// The history of `made` as of `now`; backups dated more than [`FUTURE_SLACK`] after
    /// `now` go to `future`.
    pub fn of(now: SystemTime, made: &[Made]) -> History {
        let mut h = History::default();
        for m in made {
            if m.time > now + FUTURE_SLACK {
                h.future.push((m.id.clone(), m.time));
                continue;
            }
            h.last = h.last.max(Some(m.time));
            if m.full {
                h.last_full = h.last_full.max(Some(m.time));
            }
        }
        h
    }

    /// One warning per backup dated in the future, naming it and its date.
    pub fn warnings(&self) -> Vec<String> {
        self.future
            .iter()
            .map(|(id, t)| {
                format!(
                    "backup {id} is dated {}, which is in the future: the clock was wrong when \
                     it was made, or is wrong now; the schedule ignores it and runs from now",
                    crate::layout::rfc3339(*t)
                )
            })
            .collect()
    }
}

/// When a backup was made: the manifest's `created` (RFC 3339, as offsite writes it), or the
/// time in its id when that does not parse.
pub fn made_at(id: &crate::layout::BackupId, created: &str) -> SystemTime {
    let stamp: String = created.chars().filter(|c| *c != '-' && *c != ':').collect();
    crate::layout::BackupId::parse(&format!("{stamp}-full"))
        .map_or_else(|| id.time(), |parsed| parsed.time())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing is due; the next backup is due at this time.
    NotDue {
        next_due: SystemTime,
    },
    /// A full backup, and why it was chosen.
    Full {
        reason: String,
    },
    Incremental,
}

pub struct Request {
    /// `--once`: run now whether due or not.
    pub once: bool,
    /// `--full`.
    pub force_full: bool,
    /// Whether the source can send incrementals (zfs and btrfs can; commands cannot).
    pub can_incremental: bool,
    /// `Err(why)` when the newest backup cannot be a parent: its snapshot is gone locally,
    /// its chain is broken, or it is incomplete on every provider.
    pub parent_usable: Result<(), String>,
}

pub fn decide(now: SystemTime, s: Schedule, h: &History, r: &Request) -> Decision {
    let elapsed = |t: SystemTime| now.duration_since(t).unwrap_or_default();
    if h.future.is_empty() && (h.last_full.is_none() || h.last.is_none()) {
        return Decision::Full {
            reason: "there is no previous full backup on the providers".into(),
        };
    }
    // Only future-dated backups: their time says nothing, so a backup is due now.
    // A full_every with no full in the past (only a future-dated one) is due now, so a
    // chain is not extended from a wrongly dated full forever.
    let full_due = s
        .full_every
        .is_some_and(|d| h.last_full.is_none_or(|t| elapsed(t) >= d));
    let incr_due = h
        .last
        .is_none_or(|t| s.incremental_every.is_none_or(|d| elapsed(t) >= d));
    if !r.once && !r.force_full && !full_due && !incr_due {
        let candidates = [
            s.full_every.zip(h.last_full).map(|(d, t)| t + d),
            s.incremental_every.zip(h.last).map(|(d, t)| t + d),
        ];
        let next_due = candidates.into_iter().flatten().min().unwrap_or(now);
        return Decision::NotDue { next_due };
    }
    if r.force_full {
        return Decision::Full {
            reason: "--full was given".into(),
        };
    }
    if full_due {
        let d = s.full_every.unwrap_or_default();
        let reason = match h.last_full {
            Some(_) => format!(
                "full_every ({}) has passed since the last full backup",
                days(d)
            ),
            None => "the only full backup is dated in the future (a wrong clock)".into(),
        };
        return Decision::Full { reason };
    }
    if !r.can_incremental {
        return Decision::Full {
            reason: "command sources are always backed up in full".into(),
        };
    }
    match &r.parent_usable {
        Ok(()) => Decision::Incremental,
        Err(why) => Decision::Full {
            reason: why.clone(),
        },
    }
}

/// A duration for people: `7d`, `36h`, `90s`.
pub fn days(d: Duration) -> String {
    let s = d.as_secs();
    if s % 86_400 == 0 {
        format!("{}d", s / 86_400)
    } else if s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn at(days: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + DAY * (20_000 + days as u32)
    }

    fn weekly_incr_monthly_full() -> Schedule {
        Schedule {
            full_every: Some(DAY * 28),
            incremental_every: Some(DAY * 7),
        }
    }

    fn req() -> Request {
        Request {
            once: false,
            force_full: false,
            can_incremental: true,
            parent_usable: Ok(()),
        }
    }

    fn hist(full: u64, last: u64) -> History {
        History {
            last_full: Some(at(full)),
            last: Some(at(last)),
            future: vec![],
        }
    }

    fn made(id: &str, day: u64, full: bool) -> Made {
        Made {
            id: id.into(),
            time: at(day),
            full,
        }
    }

    #[test]
    fn a_backup_dated_in_the_future_is_named_and_the_schedule_runs_from_now() {
        // Made on day 0 and day 7 (weekly), then one while the clock said day 1500 (2030).
        let now = at(14);
        let backups = [
            made("a-full", 0, true),
            made("b-incr", 7, false),
            made("c-incr", 1500, false),
        ];
        let h = History::of(now, &backups);
        assert_eq!((h.last_full, h.last), (Some(at(0)), Some(at(7))));
        let warnings = h.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("c-incr") && warnings[0].contains(&layout_date(1500)),
            "{warnings:?}"
        );
        // Not "not due until day 1507": the weekly backup is due today.
        assert_eq!(
            decide(now, weekly_incr_monthly_full(), &h, &req()),
            Decision::Incremental
        );
        assert_eq!(
            decide(
                at(10),
                weekly_incr_monthly_full(),
                &History::of(at(10), &backups),
                &req()
            ),
            Decision::NotDue { next_due: at(14) }
        );
    }

    #[test]
    fn a_backup_a_minute_ahead_is_not_a_wrong_clock() {
        let now = at(7);
        let ahead = Made {
            id: "a-full".into(),
            time: now + Duration::from_secs(60),
            full: true,
        };
        let h = History::of(now, &[ahead]);
        assert!(h.future.is_empty() && h.warnings().is_empty());
        assert_eq!(h.last, Some(now + Duration::from_secs(60)));
    }

    #[test]
    fn only_future_dated_backups_make_a_backup_due_now() {
        // The only full is dated in the future: with full_every set, a new full is due now,
        // so later incrementals do not chain onto the wrongly dated one forever.
        let h = History::of(at(3), &[made("x-full", 1500, true)]);
        assert_eq!((h.last_full, h.last), (None, None));
        let d = decide(at(3), weekly_incr_monthly_full(), &h, &req());
        assert!(matches!(d, Decision::Full { .. }), "{d:?}");
        let h = History::of(
            at(3),
            &[made("x-full", 1500, true), made("y-incr", 2, false)],
        );
        let d = decide(at(3), weekly_incr_monthly_full(), &h, &req());
        assert!(matches!(d, Decision::Full { .. }), "{d:?}");
        // Without full_every, the schedule counts from the sane incremental.
        let incr_only = Schedule {
            full_every: None,
            ..weekly_incr_monthly_full()
        };
        assert_eq!(
            decide(at(3), incr_only, &h, &req()),
            Decision::NotDue { next_due: at(9) }
        );
    }

    #[test]
    fn made_at_reads_the_manifest_time_or_falls_back_to_the_id() {
        let id = crate::layout::BackupId::parse("20301121T020000Z-incr").unwrap();
        let real = made_at(&id, "2026-12-02T07:30:00Z");
        assert_eq!(crate::layout::rfc3339(real), "2026-12-02T07:30:00Z");
        assert_eq!(made_at(&id, "garbage"), id.time());
    }

    fn layout_date(day: u64) -> String {
        crate::layout::rfc3339(at(day))
    }

    #[test]
    fn first_run_is_a_full_backup() {
        let d = decide(
            at(0),
            weekly_incr_monthly_full(),
            &History::default(),
            &req(),
        );
        assert!(
            matches!(d, Decision::Full { ref reason } if reason.contains("no previous full")),
            "{d:?}"
        );
    }

    #[test]
    fn not_due_says_when_the_next_one_is() {
        let d = decide(at(3), weekly_incr_monthly_full(), &hist(0, 0), &req());
        assert_eq!(d, Decision::NotDue { next_due: at(7) });
    }

    #[test]
    fn incremental_when_its_cadence_is_reached() {
        assert_eq!(
            decide(at(7), weekly_incr_monthly_full(), &hist(0, 0), &req()),
            Decision::Incremental
        );
        assert_eq!(
            decide(at(16), weekly_incr_monthly_full(), &hist(0, 14), &req()),
            Decision::NotDue { next_due: at(21) }
        );
    }

    #[test]
    fn full_cadence_reached() {
        let d = decide(at(28), weekly_incr_monthly_full(), &hist(0, 21), &req());
        assert!(
            matches!(d, Decision::Full { ref reason } if reason.contains("full_every (28d)")),
            "{d:?}"
        );
    }

    #[test]
    fn once_runs_now_and_full_forces_a_full() {
        let once = Request {
            once: true,
            ..req()
        };
        assert_eq!(
            decide(at(1), weekly_incr_monthly_full(), &hist(0, 0), &once),
            Decision::Incremental
        );
        let full = Request {
            force_full: true,
            ..req()
        };
        assert!(matches!(
            decide(at(1), weekly_incr_monthly_full(), &hist(0, 0), &full),
            Decision::Full { .. }
        ));
    }

    #[test]
    fn no_schedule_means_every_run_is_due() {
        assert_eq!(
            decide(at(0), Schedule::default(), &hist(0, 0), &req()),
            Decision::Incremental
        );
    }

    #[test]
    fn an_unusable_parent_or_a_command_source_makes_a_full() {
        let gone = Request {
            parent_usable: Err("parent snapshot tank/a@x is gone".into()),
            ..req()
        };
        assert_eq!(
            decide(at(7), weekly_incr_monthly_full(), &hist(0, 0), &gone),
            Decision::Full {
                reason: "parent snapshot tank/a@x is gone".into()
            }
        );
        let cmd = Request {
            can_incremental: false,
            ..req()
        };
        assert!(matches!(
            decide(at(7), weekly_incr_monthly_full(), &hist(0, 0), &cmd),
            Decision::Full { .. }
        ));
    }
}
