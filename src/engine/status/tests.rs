use super::*;
use crate::error::{ErrorKind, ProviderError};
use crate::gaps::{Holding, RefShard};
use crate::layout::BackupId;
use std::collections::BTreeMap;

fn key(stamp: &str) -> BackupKey {
    BackupKey {
        dataset: "tank/data".into(),
        id: BackupId::parse(&format!("{stamp}-full")).unwrap(),
    }
}

fn whole(provider: &str) -> ProviderFindings {
    ProviderFindings {
        provider: provider.into(),
        expected: true,
        reachable: true,
        manifest: ManifestState::Good,
        manifest_error: None,
        missing_shards: vec![],
        wrong_size_shards: vec![],
        corrupt_shards: vec![],
        unexpected_objects: vec![],
        pieces: None,
        held: Holding::default(),
    }
}

fn finished(providers: Vec<ProviderFindings>) -> BackupFindings {
    let shard = |index| RefShard {
        index,
        name: format!("{index}"),
        length: 10,
        sha256: None,
        md5: None,
        sha1: None,
        piece: None,
        holder: None,
    };
    BackupFindings {
        manifest_from: Some(providers[0].provider.clone()),
        damaged: None,
        reference: vec![shard(0), shard(1), shard(2)],
        total_bytes: Some(30),
        providers,
        strength: None,
    }
}

fn catalog(unreachable: &[&str]) -> Catalog {
    Catalog {
        host: "h".into(),
        order: vec!["a".into(), "b".into()],
        backups: BTreeMap::new(),
        unreachable: unreachable
            .iter()
            .map(|p| {
                let e = ProviderError::new(p, "list", "", ErrorKind::Transient, "down");
                (p.to_string(), e)
            })
            .collect(),
    }
}

#[test]
fn a_copy_is_described_in_the_words_of_the_status_table() {
    assert_eq!(describe(&whole("a"), true), "complete");
    let mut p = whole("a");
    p.missing_shards = vec![0, 2];
    p.wrong_size_shards = vec![1];
    p.manifest = ManifestState::Missing;
    p.unexpected_objects = vec!["junk".into()];
    assert_eq!(
        describe(&p, true),
        "missing 2 shards, 1 truncated, no manifest, 1 unexpected"
    );
    p.expected = false;
    p.held = Holding {
        shards: 2,
        bytes: 2048,
        prefix: 2,
    };
    p.missing_shards.clear();
    assert!(describe(&p, false).starts_with("(unfinished: 2 shards, "));
    p.reachable = false;
    assert_eq!(describe(&p, true), "unreachable");
    assert_eq!(describe_damaged(&whole("a")), "disputed manifest");
}

#[test]
fn states_in_one_word() {
    let mut b = whole("b");
    b.corrupt_shards = vec![1];
    let f = finished(vec![whole("a"), b]);
    assert_eq!(backup_state(&f), CopyState::Incomplete);
    assert_eq!(provider_state(&f.providers[1], true), CopyState::Incomplete);
    assert_eq!(
        provider_state(&f.providers[0], false),
        CopyState::Unfinished
    );
    assert_eq!(
        backup_state(&finished(vec![whole("a")])),
        CopyState::Complete
    );
}

#[test]
fn the_status_report_keeps_its_released_json_keys() {
    let mut b = whole("b");
    b.wrong_size_shards = vec![1];
    let surveys = vec![(key("20261121T020000Z"), finished(vec![whole("a"), b]))];
    let report = status_report(&catalog(&[]), &surveys, "sync");
    let v = serde_json::to_value(&report).unwrap();
    let backup = &v["backups"][0];
    assert_eq!(backup["state"], "incomplete");
    assert_eq!(backup["kind"], "full");
    assert_eq!(backup["shards"], 3);
    assert_eq!(backup["total_bytes"], 30);
    let copy = &backup["providers"][1];
    let mut keys: Vec<&str> = copy
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "corrupt_shards",
            "expected",
            "held",
            "manifest",
            "manifest_error",
            "missing_shards",
            "provider",
            "state",
            "truncated_shards",
            "unexpected_objects"
        ]
    );
    assert_eq!(copy["state"], "incomplete");
    assert_eq!(copy["truncated_shards"], serde_json::json!([1]));
    assert_eq!(
        report.gaps.as_deref(),
        Some("backup 20261121T020000Z-full of \"tank/data\": b: 1 truncated; sync")
    );
}

#[test]
fn only_unfinished_backups_ask_for_a_resume_and_at_most_five_are_named() {
    let mut unfinished = finished(vec![whole("a")]);
    unfinished.manifest_from = None;
    let surveys: Vec<_> = (0..7)
        .map(|i| (key(&format!("2026112{i}T020000Z")), unfinished.clone()))
        .collect();
    let gaps = gaps_summary(&catalog(&[]), &surveys, "sync").unwrap();
    assert!(
        gaps.ends_with("and 2 more backups; run `offsite backup` again to resume"),
        "{gaps}"
    );
    assert_eq!(gaps.matches("is unfinished").count(), 5);
    let gaps = gaps_summary(&catalog(&["b"]), &surveys[..1], "sync").unwrap();
    assert!(
        gaps.starts_with("provider b could not be listed; "),
        "{gaps}"
    );
    assert!(gaps.ends_with("; sync"), "{gaps}");
    let whole = vec![(key("20261121T020000Z"), finished(vec![whole("a")]))];
    assert_eq!(gaps_summary(&catalog(&[]), &whole, "sync"), None);
}

#[tokio::test]
async fn an_encrypted_backup_is_surveyed_from_stored_names_without_a_key() {
    use crate::gaps::fixture::{config, encoded, path, store};
    use crate::provider::{DynProvider, MemoryProvider};
    use std::sync::Arc;
    let (_dir, cfg) = config(&["a", "b"]);
    let text = b"the same line again and again\n".repeat(100);
    let (m, stored) = encoded(&[&text, &text, b"tail"]);
    let mems = [MemoryProvider::new("a"), MemoryProvider::new("b")].map(Arc::new);
    mems.iter().for_each(|p| store(p, &m, &stored));
    let status = |mems: &[Arc<MemoryProvider>; 2]| {
        let providers: Vec<DynProvider> = mems.iter().map(|p| p.clone() as DynProvider).collect();
        let cfg = &cfg;
        async move {
            let catalog = Catalog::scan(&providers, "h", None).await;
            let surveys = crate::gaps::survey(cfg, &catalog, &Default::default());
            status_report(&catalog, &surveys, "sync")
        }
    };
    let report = status(&mems).await;
    assert!(report.gaps.is_none(), "{:?}", report.gaps);
    let v = serde_json::to_value(&report).unwrap();
    let b = &v["backups"][0];
    assert_eq!(b["state"], "complete");
    assert_eq!(b["total_bytes"], 2 * text.len() as u64 + 4, "plaintext");
    let on_disk: u64 = stored.iter().map(|s| s.len() as u64).sum();
    assert_eq!(b["stored_bytes"], on_disk);

    // b loses a `.zst.age` shard; a holds a stray bare-named one next to its shards.
    mems[1].remove_object(&path(&m, &m.object(&m.shards[1])));
    let bare = crate::layout::shard_name(1, text.len() as u64);
    mems[0].set_object(&path(&m, &bare), stored[1].clone());
    let report = status(&mems).await;
    let v = serde_json::to_value(&report).unwrap();
    let (a, b) = (
        &v["backups"][0]["providers"][0],
        &v["backups"][0]["providers"][1],
    );
    assert_eq!(a["state"], "complete");
    assert_eq!(a["unexpected_objects"], serde_json::json!([bare]));
    assert_eq!(b["state"], "incomplete");
    assert_eq!(b["missing_shards"], serde_json::json!([1]));
    assert_eq!(
        report.gaps.as_deref(),
        Some("backup 20261121T020000Z-full of \"d\": b: missing 1 shard; sync")
    );
}

/// `status` of a 2+1 erasure-coded backup of three shards on MemoryProviders a, b and c.
mod erasure {
    use super::*;
    use crate::gaps::fixture::{config, erasure, path, store_pieces};
    use crate::manifest::{sample, Manifest};
    use crate::provider::{DynProvider, MemoryProvider};
    use bytes::Bytes;
    use std::sync::Arc;

    const SHARDS: [&[u8]; 3] = [b"abcdefgh", b"ijklmnop", b"qrs"];

    fn backup() -> (Manifest, [Arc<MemoryProvider>; 3]) {
        let stored: Vec<Bytes> = SHARDS.iter().map(|s| Bytes::from_static(s)).collect();
        let (m, pieces) = erasure(
            sample(&SHARDS),
            &stored,
            "2+1".parse().unwrap(),
            &["a", "b", "c"],
        );
        let mems = ["a", "b", "c"].map(|n| Arc::new(MemoryProvider::new(n)));
        let named: Vec<(&str, &MemoryProvider)> = ["a", "b", "c"]
            .into_iter()
            .zip(mems.iter().map(|m| &**m))
            .collect();
        store_pieces(&named, &m, &pieces);
        (m, mems)
    }

    async fn status(mems: &[Arc<MemoryProvider>; 3]) -> StatusReport {
        let (_dir, cfg) = config(&["a", "b", "c"]);
        let providers: Vec<DynProvider> = mems.iter().map(|p| p.clone() as DynProvider).collect();
        let catalog = Catalog::scan(&providers, "h", None).await;
        let surveys = crate::gaps::survey(&cfg, &catalog, &Default::default());
        status_report(&catalog, &surveys, "run `offsite sync` to fill the gaps")
    }

    /// Removes piece `p` of shard `s` from its holder.
    fn remove(m: &Manifest, mems: &[Arc<MemoryProvider>; 3], s: usize, p: usize) -> String {
        let holder = m.erasure.as_ref().unwrap().holder(s as u64, p).to_string();
        let i = ["a", "b", "c"].iter().position(|n| *n == holder).unwrap();
        mems[i].remove_object(&path(m, &m.piece_object(&m.shards[s], p)));
        holder
    }

    #[tokio::test]
    async fn a_whole_erasure_backup_shows_every_shard_at_full_strength() {
        let (_, mems) = backup();
        let report = status(&mems).await;
        assert_eq!((&report.gaps, &report.lost), (&None, &None));
        let v = serde_json::to_value(&report).unwrap();
        let b = &v["backups"][0];
        assert_eq!(b["state"], "complete");
        assert_eq!(b["shards"], 3);
        assert_eq!(
            b["strength"],
            serde_json::json!({"full": 3, "degraded": 0, "lost": 0, "first_lost": null})
        );
        for p in b["providers"].as_array().unwrap() {
            assert_eq!((&p["pieces"], &p["held"]["shards"]), (&3.into(), &3.into()));
        }
        let a = &report.backups[0].providers[0].findings;
        assert_eq!(describe(a, true), "complete, 3 pieces");
    }

    #[tokio::test]
    async fn a_missing_piece_is_a_degraded_shard_and_a_gap() {
        let (m, mems) = backup();
        let holder = remove(&m, &mems, 1, 0);
        let report = status(&mems).await;
        assert_eq!(report.lost, None);
        let gaps = report.gaps.expect("a degraded shard is a gap: exit 3");
        assert!(
            gaps.contains(&format!("{holder}: missing 1 of 3 pieces")),
            "{gaps}"
        );
        assert!(gaps.contains("(shards: 2 full, 1 degraded)"), "{gaps}");
        assert!(
            gaps.ends_with("run `offsite sync` to fill the gaps"),
            "{gaps}"
        );
        let v = serde_json::to_value(&report.backups[0]).unwrap();
        assert_eq!(v["strength"]["degraded"], 1);
        assert_eq!(v["state"], "incomplete");
    }

    #[tokio::test]
    async fn a_shard_with_fewer_than_k_pieces_is_lost_and_says_what_to_do() {
        let (m, mems) = backup();
        remove(&m, &mems, 2, 0);
        remove(&m, &mems, 2, 1);
        let report = status(&mems).await;
        let lost = report.lost.expect("a lost shard: exit 1");
        assert!(lost.contains("has 1 lost shard"), "{lost}");
        assert!(lost.contains("restore fails from shard 2"), "{lost}");
        assert!(
            lost.contains("run `offsite backup` of \"d\" again"),
            "{lost}"
        );
        let v = serde_json::to_value(&report.backups[0]).unwrap();
        assert_eq!(v["strength"]["lost"], 1);
        assert_eq!(v["strength"]["first_lost"], 2);
    }
}
