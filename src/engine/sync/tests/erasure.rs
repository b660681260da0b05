//! Sync of a 2+1 erasure-coded backup of three shards on a, b and c: missing and corrupt pieces
//! rebuilt from two others, a lost shard unfillable, `--dry-run`, and migration.

use super::*;
use crate::gaps::fixture::{erasure, store_pieces};
use crate::manifest::Manifest;

impl Setup {
    /// One 2+1 backup of [`SHARDS`] (longer ones) placed on a, b and c; d empty.
    fn erasure() -> Setup {
        let (_dir, cfg) = config();
        const LONG: [&[u8]; 3] = [b"abcdefghij", b"klmnopqrst", b"uvw"];
        let stored: Vec<Bytes> = LONG.iter().map(|s| Bytes::from_static(s)).collect();
        let scheme = "2+1".parse().unwrap();
        let (manifest, pieces) = erasure(sample(&LONG), &stored, scheme, &["a", "b", "c"]);
        let mems: Vec<Arc<MemoryProvider>> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| Arc::new(MemoryProvider::new(n)))
            .collect();
        let named: Vec<(&str, &MemoryProvider)> = ["a", "b", "c"]
            .into_iter()
            .zip(mems.iter().map(|m| &**m))
            .collect();
        store_pieces(&named, &manifest, &pieces);
        Setup {
            _dir,
            cfg,
            mems,
            manifest,
            stored,
        }
    }

    /// Piece `p` of shard `s`: its holder and path.
    fn piece(&self, s: usize, p: usize) -> (&Arc<MemoryProvider>, String) {
        let m = &self.manifest;
        let holder = m.erasure.as_ref().unwrap().holder(s as u64, p);
        (self.mem(holder), path(&m.piece_object(&m.shards[s], p)))
    }

    /// Provider `name` loses every piece and its manifest.
    fn lose(&self, name: &str) {
        for s in 0..self.manifest.shards.len() {
            for p in 0..3 {
                let (mem, at) = self.piece(s, p);
                if mem.name() == name {
                    mem.remove_object(&at);
                }
            }
        }
        self.mem(name).remove_object(&path(MANIFEST));
    }

    /// Every piece and manifest where it belongs, byte for byte.
    fn assert_whole(&self) {
        let fresh = Setup::erasure();
        for (s, _) in self.manifest.shards.iter().enumerate() {
            for p in 0..3 {
                let ((mem, at), (want, _)) = (self.piece(s, p), fresh.piece(s, p));
                assert_eq!(mem.object(&at), want.object(&at), "shard {s} piece {p}");
            }
        }
        for m in &self.mems[..3] {
            assert!(m.object(&path(MANIFEST)).is_some(), "{}", m.name());
        }
    }
}

#[tokio::test]
async fn a_provider_that_lost_everything_gets_its_pieces_rebuilt_and_its_manifest() {
    let s = Setup::erasure();
    s.lose("b");
    let report = s.sync(&Mode::All, &Corrupt::new()).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let pieces: Vec<&Copied> = report
        .copied
        .iter()
        .filter(|c| c.object != MANIFEST)
        .collect();
    assert_eq!(
        pieces.len(),
        3,
        "one piece of each shard: {:?}",
        report.copied
    );
    assert!(pieces
        .iter()
        .all(|c| c.to == "b" && c.from.starts_with("rebuilt from ")));
    s.assert_whole();
    let (_, surveys) = s.scan(&Corrupt::new()).await;
    assert!(!surveys[0].1.has_gaps(), "{:#?}", surveys[0].1);
}

#[tokio::test]
async fn a_corrupt_piece_is_rebuilt_never_used_as_a_source() {
    let s = Setup::erasure();
    let (mem, at) = s.piece(0, 1);
    let mut body = mem.object(&at).unwrap().to_vec();
    body[0] ^= 0xff;
    mem.set_object(&at, Bytes::from(body));
    let corrupt: Corrupt = [(key(), [(mem.name().to_string(), [0u64].into())].into())].into();
    let report = s.sync(&Mode::Repair(mem.name().into()), &corrupt).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.copied.len(), 1, "{:?}", report.copied);
    s.assert_whole();
}

#[tokio::test]
async fn a_corrupt_source_piece_found_while_fetching_is_passed_over() {
    let s = Setup::erasure();
    s.lose("a");
    // Shard 1's pieces sit on b, c, a; its piece on b is corrupt, unknown to the listing:
    // only one good piece is left, so that shard fails and the others are rebuilt.
    let (mem, at) = s.piece(1, 0);
    let mut body = mem.object(&at).unwrap().to_vec();
    body[0] ^= 0xff;
    mem.set_object(&at, Bytes::from(body));
    let report = s.sync(&Mode::Repair("a".into()), &Corrupt::new()).await;
    assert_eq!(
        report.failed.len(),
        2,
        "the piece and the manifest: {:?}",
        report.failed
    );
    let why = &report.failed[0].error;
    assert!(why.contains("holds a corrupt"), "{why}");
    let rebuilt = report
        .copied
        .iter()
        .filter(|c| c.object != MANIFEST)
        .count();
    assert_eq!(rebuilt, 2);
}

#[tokio::test]
async fn a_shard_with_fewer_than_k_good_pieces_is_unfillable() {
    let s = Setup::erasure();
    for p in [0, 1] {
        let (mem, at) = s.piece(2, p);
        mem.remove_object(&at);
    }
    let (catalog, surveys) = s.scan(&Corrupt::new()).await;
    let p = plan(&catalog, &surveys, &Mode::All);
    assert!(p.rebuilds.is_empty(), "{:?}", p.rebuilds);
    assert_eq!(p.unfillable.len(), 2);
    assert!(p.unfillable[0]
        .reason
        .contains("only 1 good piece(s) of shard 2 left, 2 needed"));
}

#[tokio::test]
async fn dry_run_lists_the_pieces_it_would_rebuild() {
    let s = Setup::erasure();
    let (mem, at) = s.piece(1, 2);
    mem.remove_object(&at);
    let (catalog, surveys) = s.scan(&Corrupt::new()).await;
    let dry = plan(&catalog, &surveys, &Mode::All).dry_run();
    assert_eq!(dry.planned.len(), 1, "{:?}", dry.planned);
    let c = &dry.planned[0];
    assert_eq!(
        (c.to.as_str(), c.object.ends_with(".p3of3")),
        (mem.name(), true)
    );
    assert!(c.from.starts_with("rebuilt from "), "{}", c.from);
    assert_eq!(c.bytes, Some(s.manifest.shards[1].pieces[2].length));
    assert!(mem.object(&at).is_none(), "nothing written");
}

fn a_to_d() -> Mode {
    Mode::Migrate {
        from: "a".into(),
        to: "d".into(),
    }
}

impl Setup {
    /// The manifest each of a, b, c and d holds (`None`: none).
    fn manifests(&self) -> Vec<Option<Manifest>> {
        let read = |m: &Arc<MemoryProvider>| {
            (m.object(&path(MANIFEST))).map(|b| Manifest::from_json(&b).unwrap())
        };
        self.mems.iter().map(read).collect()
    }

    /// Whether d holds, byte for byte, every piece placement put on a.
    fn d_holds_what_a_held(&self) -> bool {
        let fresh = Setup::erasure();
        let a = fresh.mem("a");
        a.paths()
            .iter()
            .filter(|p| !p.ends_with(MANIFEST))
            .all(|p| self.mem("d").object(p) == a.object(p))
    }
}

#[tokio::test]
async fn migrating_moves_the_pieces_and_writes_a_manifest_naming_the_new_holder() {
    let s = Setup::erasure();
    let report = s.sync(&a_to_d(), &Corrupt::new()).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert!(s.d_holds_what_a_held());
    let [a, b, c, d] = &s.manifests()[..] else {
        unreachable!()
    };
    assert_eq!(a.as_ref(), Some(&s.manifest), "a keeps its manifest");
    let moved = s.manifest.relocated("a", "d").unwrap();
    for m in [b, c, d] {
        assert_eq!(m.as_ref().and_then(|m| m.erasure.clone()), moved.erasure);
    }
    // The catalog trusts the relocated manifest whatever the priority.
    let (catalog, _) = s.scan(&Corrupt::new()).await;
    let (_, trusted) = catalog.backups[&key()].manifest(&catalog.order).unwrap();
    assert_eq!(trusted.erasure.as_ref().unwrap().providers, ["d", "b", "c"]);
}

#[tokio::test]
async fn a_piece_the_source_lost_is_rebuilt_at_the_destination() {
    let s = Setup::erasure();
    let (mem, at) = s.piece(1, 2);
    assert_eq!(mem.name(), "a");
    let want = mem.object(&at).unwrap();
    mem.remove_object(&at);
    let report = s.sync(&a_to_d(), &Corrupt::new()).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(s.mem("d").object(&at), Some(want));
    let rebuilt: Vec<&Copied> = report
        .copied
        .iter()
        .filter(|c| c.object == at.rsplit('/').next().unwrap())
        .collect();
    assert!(rebuilt[0].from.starts_with("rebuilt from "), "{rebuilt:?}");
}

#[tokio::test]
async fn no_manifest_is_written_anywhere_while_the_destination_misses_a_piece() {
    let s = Setup::erasure();
    s.mem("d").inject(Fault {
        op: "put",
        path_contains: ".p".into(),
        kind: crate::error::ErrorKind::Permanent,
        times: 1,
    });
    let report = s.sync(&a_to_d(), &Corrupt::new()).await;
    let manifests = report
        .failed
        .iter()
        .filter(|f| f.object == MANIFEST)
        .count();
    assert_eq!(manifests, 3, "b, c and d: {:?}", report.failed);
    assert_eq!(
        s.manifests()[1].as_ref(),
        Some(&s.manifest),
        "b keeps the old one"
    );
    assert!(s.manifests()[3].is_none());
}

#[tokio::test]
async fn an_unfinished_erasure_backup_is_not_migrated() {
    let s = Setup::erasure();
    for m in &s.mems {
        m.remove_object(&path(MANIFEST));
    }
    let (catalog, surveys) = s.scan(&Corrupt::new()).await;
    let p = plan(&catalog, &surveys, &a_to_d());
    assert!(p.copies.is_empty() && p.rebuilds.is_empty() && p.manifests.is_empty());
    assert!(p.unfillable[0]
        .reason
        .contains("unfinished erasure-coded backup is not migrated"));
}

#[tokio::test]
async fn migrating_to_a_provider_that_holds_pieces_is_a_usage_error() {
    let s = Setup::erasure();
    let (catalog, _) = s.scan(&Corrupt::new()).await;
    let to = |to: &str| Mode::Migrate {
        from: "a".into(),
        to: to.into(),
    };
    let err = super::super::run::refuse_erasure_target(&catalog, &to("b")).unwrap_err();
    assert_eq!(crate::error::exit_code(&err), 2);
    let text = format!("{err:#}");
    assert!(
        text.contains("cannot migrate a to b") && text.contains("a, b, c"),
        "{text}"
    );
    assert!(super::super::run::refuse_erasure_target(&catalog, &to("d")).is_ok());
}

#[tokio::test]
async fn a_migration_with_remove_source_checks_every_moved_piece_then_empties_the_source() {
    use super::run::{done, run_sync};
    let s = Setup::erasure();
    let (report, late) = done(run_sync(&s, a_to_d(), false, false).await);
    late.unwrap();
    assert_eq!(report.migration.unwrap().verified_backups, 1);
    assert!(
        s.mem("a").paths().len() == 4,
        "a keeps 3 pieces and its manifest"
    );
    // Run again with --remove-source: nothing left to move, d checked, a emptied.
    let (report, late) = done(run_sync(&s, a_to_d(), false, true).await);
    late.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let summary = report.migration.unwrap();
    assert_eq!(
        (summary.verified_backups, summary.removed_objects),
        (1, Some(4))
    );
    assert!(s.mem("a").paths().is_empty(), "{:?}", s.mem("a").paths());
    assert!(s.d_holds_what_a_held());
}

#[tokio::test]
async fn a_piece_corrupted_at_the_destination_is_rebuilt_before_the_source_goes() {
    use super::run::{done, run_sync};
    let s = Setup::erasure();
    done(run_sync(&s, a_to_d(), false, false).await).1.unwrap();
    let (_, at) = s.piece(0, 0);
    let mut body = s.mem("d").object(&at).unwrap().to_vec();
    body[0] ^= 0xff;
    s.mem("d").set_object(&at, Bytes::from(body));
    // The listing's MD5 shows the damage: the piece is rebuilt at d from b and c, checked,
    // and only then is a emptied.
    let (report, late) = done(run_sync(&s, a_to_d(), false, true).await);
    late.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.copied.len(), 1, "{:?}", report.copied);
    assert!(report.copied[0].from.starts_with("rebuilt from "));
    assert!(s.mem("a").paths().is_empty());
    assert!(s.d_holds_what_a_held());
}
