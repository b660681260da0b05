use super::*;
use crate::progress::ProviderState;

const GIB: u64 = 1 << 30;

fn snapshot(what: &str, total: Option<u64>, lanes: Vec<LaneView>) -> Snapshot {
    Snapshot {
        what: what.into(),
        total,
        done: 1023 * GIB + 900 * (1 << 20),
        elapsed: Duration::from_secs(400_000),
        rate: Some(1023.9 * (1 << 20) as f64),
        eta: Some(Duration::from_secs(99 * 86_400)),
        lanes,
        now: Instant::now(),
    }
}

fn lane(name: &str, state: ProviderState, sending: u64) -> LaneView {
    LaneView {
        name: name.into(),
        bytes: 1023 * GIB,
        sending,
        rate: Some(1023.0 * (1 << 20) as f64),
        state,
    }
}

/// The widest numbers and longest names still give lines of at most 80 columns (and of the
/// terminal's width when it is narrower).
#[test]
fn every_line_fits_the_width() {
    let now = Instant::now();
    let states = [
        ProviderState::Normal,
        ProviderState::Down,
        ProviderState::Retrying {
            attempt: 10,
            of: 10,
            at: now + Duration::from_secs(300),
        },
    ];
    let lanes: Vec<LaneView> = states
        .iter()
        .map(|s| lane("a-provider-with-a-very-long-name", *s, 1023 * GIB))
        .collect();
    for what in [
        "backup x",
        "backup a-dataset-with-a-name-longer-than-the-line-itself-is-wide-at-all",
    ] {
        for total in [None, Some(2048 * GIB)] {
            let s = snapshot(what, total, lanes.clone());
            for width in [80, 60, 20] {
                let main = main_line(&s, width);
                assert!(main.chars().count() <= width, "{width}: {main:?}");
                for l in &s.lanes {
                    let line = lane_line(l, NAME_WIDTH, s.now, width);
                    assert!(line.chars().count() <= width, "{width}: {line:?}");
                }
            }
        }
    }
}

#[test]
fn the_main_line_has_a_bar_bytes_rate_and_eta() {
    let s = Snapshot {
        what: "backup media".into(),
        total: Some(4 * GIB),
        done: GIB,
        elapsed: Duration::from_secs(10),
        rate: Some(5.0 * (1 << 20) as f64),
        eta: Some(Duration::from_secs(552)),
        lanes: Vec::new(),
        now: Instant::now(),
    };
    let line = main_line(&s, 80);
    assert_eq!(line.chars().count(), 80, "{line:?}");
    assert!(line.starts_with("backup media [=======>"), "{line:?}");
    assert!(
        line.ends_with("] 1.0 GiB/~4.0 GiB 5.0 MiB/s ETA 9m12s"),
        "{line:?}"
    );
}

#[test]
fn no_eta_and_no_rate_before_anything_moved() {
    let s = Snapshot {
        what: "backup media".into(),
        total: Some(4 * GIB),
        done: 0,
        elapsed: Duration::from_secs(3),
        rate: None,
        eta: None,
        lanes: Vec::new(),
        now: Instant::now(),
    };
    let line = main_line(&s, 80);
    assert!(line.ends_with("] 0 B/~4.0 GiB 3s"), "{line:?}");
    assert!(!line.contains("ETA"), "{line:?}");
}

#[test]
fn a_provider_line_says_its_state_or_what_it_is_sending() {
    let now = Instant::now();
    let mut l = lane("dav", ProviderState::Normal, 16 << 20);
    l.bytes = 24 << 20;
    l.rate = Some(4.9 * (1 << 20) as f64);
    assert_eq!(
        lane_line(&l, 5, now, 80),
        "  dav     24.0 MiB    4.9 MiB/s  sending 16.0 MiB"
    );
    l.state = ProviderState::Retrying {
        attempt: 3,
        of: 5,
        at: now + Duration::from_secs(4),
    };
    assert!(lane_line(&l, 5, now, 80).ends_with("  retrying 3/5 in 4s"));
    l.state = ProviderState::Down;
    l.rate = None;
    assert_eq!(
        lane_line(&l, 3, now, 80),
        "  dav   24.0 MiB               DOWN"
    );
}
