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
    let (Some(last_full), Some(last)) = (h.last_full, h.last) else {
        return Decision::Full {
            reason: "there is no previous full backup on the providers".into(),
        };
    };
    let full_due = s.full_every.is_some_and(|d| elapsed(last_full) >= d);
    let incr_due = s.incremental_every.is_none_or(|d| elapsed(last) >= d);
    if !r.once && !r.force_full && !full_due && !incr_due {
        let candidates = [
            s.full_every.map(|d| last_full + d),
            s.incremental_every.map(|d| last + d),
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
        return Decision::Full {
            reason: format!(
                "full_every ({}) has passed since the last full backup",
                days(d)
            ),
        };
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
        }
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
