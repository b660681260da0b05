//! One behaviour suite run against every provider implementation (restic's backend test suite).

use super::*;
use crate::config::ProviderConfig;
use crate::error::ErrorKind;

/// `root` is what [`Provider::copy_from`] takes to name `p` itself as the source.
async fn suite(p: &dyn Provider, root: &str) {
    assert_eq!(
        p.list("h/d").await.unwrap(),
        vec![],
        "a missing directory lists as empty"
    );
    let data = Bytes::from(
        (0..300_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let s2 = seen.clone();
    let progress: ProgressFn = Arc::new(move |n| s2.store(n, std::sync::atomic::Ordering::SeqCst));
    p.put("h/d/b/s1", data.clone(), Some(progress))
        .await
        .unwrap();
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 300_000);
    p.put("h/d/b/manifest.json", Bytes::from_static(b"{}"), None)
        .await
        .unwrap();
    p.put("h/other", Bytes::from_static(b"x"), None)
        .await
        .unwrap();

    let mut listing = p.list("h/d").await.unwrap();
    listing.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(
        listing,
        vec![
            ObjectInfo {
                path: "b/manifest.json".into(),
                size: 2,
                ..ObjectInfo::default()
            },
            ObjectInfo {
                path: "b/s1".into(),
                size: 300_000,
                ..ObjectInfo::default()
            },
        ]
    );
    assert_eq!(p.get("h/d/b/s1", 300_000).await.unwrap(), data);
    let ranged = p.get_range("h/d/b/s1", 100_000, 50_000).await.unwrap();
    assert_eq!(ranged, data.slice(100_000..150_000), "a ranged read");
    assert_eq!(
        p.get_range("h/d/b/s1", 0, 1).await.unwrap(),
        data.slice(..1),
        "a range at the start"
    );
    assert_eq!(
        p.get_range("h/d/b/s1", 299_000, 5_000).await.unwrap().len(),
        1_000,
        "a range past the end is short"
    );
    assert_eq!(
        p.get_range("h/d/b/nope", 0, 10).await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert!(
        p.get("h/d/b/s1", 1000).await.is_err(),
        "a read larger than the limit fails"
    );
    assert_eq!(
        p.get("h/d/b/nope", 10).await.unwrap_err().kind,
        ErrorKind::NotFound
    );

    p.put("h/d/b/s1", Bytes::from_static(b"short"), None)
        .await
        .unwrap();
    assert_eq!(
        p.get("h/d/b/s1", 100).await.unwrap(),
        Bytes::from_static(b"short"),
        "put replaces"
    );

    p.copy_from(root, "h/d/b/s1", "h/d/c/s1").await.unwrap();
    assert_eq!(
        p.get("h/d/c/s1", 100).await.unwrap(),
        Bytes::from_static(b"short"),
        "copy_from copies"
    );
    p.put("h/d/c/s1", Bytes::from_static(b"other"), None)
        .await
        .unwrap();
    p.copy_from(root, "h/d/b/s1", "h/d/c/s1").await.unwrap();
    assert_eq!(
        p.get("h/d/c/s1", 100).await.unwrap(),
        Bytes::from_static(b"short"),
        "copy_from replaces an object of the same size"
    );
    assert!(p.copy_from(root, "h/d/b/nope", "h/d/c/x").await.is_err());
    p.delete("h/d/c/s1").await.unwrap();

    p.delete("h/d/b/s1").await.unwrap();
    p.delete("h/d/b/s1").await.unwrap();
    assert_eq!(p.list("h/d").await.unwrap().len(), 1);
    p.about().await.unwrap();
}

#[tokio::test]
async fn memory_provider_conforms() {
    suite(&MemoryProvider::new("mem"), "mem").await;
}

#[tokio::test]
async fn retry_wrapper_conforms() {
    let policy = crate::config::RetryPolicy {
        attempts: 2,
        base_delay: std::time::Duration::from_millis(1),
    };
    let p = Retry::new(MemoryProvider::new("mem"), policy);
    suite(&p, "mem").await;
}

#[tokio::test]
async fn rclone_provider_conforms() {
    let Ok(rclone) = which::which("rclone") else {
        panic!("rclone is not installed: run scripts/test.sh, which installs it");
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = ProviderConfig {
        name: "local".into(),
        remote: dir.path().display().to_string(),
        enabled: true,
        priority: 1,
        bwlimit: None,
        flags: vec![],
        list_hashes: crate::config::ListHashes::Never,
    };
    suite(
        &RcloneProvider::from_parts(&rclone, None, &cfg),
        &dir.path().display().to_string(),
    )
    .await;
}
