use super::file::{temp_path, RegularFile};
use super::targets::subvolume_state;
use super::*;
use std::path::Path;

#[tokio::test]
async fn a_file_appears_only_when_complete() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.bin");
    let mut r = Receiver::start(&ReceiverSpec::File(path.clone()))
        .await
        .unwrap();
    r.sink().write_all(b"half").await.unwrap();
    assert!(!path.exists() && leftover_partials(&path).len() == 1);
    r.abort().await;
    assert!(!path.exists() && leftover_partials(&path).is_empty());

    let mut r = Receiver::start(&ReceiverSpec::File(path.clone()))
        .await
        .unwrap();
    r.sink().write_all(b"whole").await.unwrap();
    r.finish().await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"whole");
    assert!(leftover_partials(&path).is_empty());
}

#[tokio::test]
async fn a_planted_partial_symlink_is_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.bin");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    // The old fixed temporary name, and a guessable new-style one, both planted.
    std::os::unix::fs::symlink(&victim, dir.path().join("out.bin.partial")).unwrap();
    let mut r = Receiver::start(&ReceiverSpec::File(path.clone()))
        .await
        .unwrap();
    r.sink().write_all(b"stream").await.unwrap();
    r.finish().await.unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_eq!(std::fs::read(&path).unwrap(), b"stream");
    // O_EXCL|O_NOFOLLOW: a symlink at the temporary name itself is refused, not followed.
    let temp = temp_path(&path);
    std::os::unix::fs::symlink(&victim, &temp).unwrap();
    assert!(RegularFile::create_new(&temp).await.is_err());
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
}

#[tokio::test]
async fn the_final_rename_never_replaces_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.bin");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let mut r = Receiver::start(&ReceiverSpec::File(path.clone()))
        .await
        .unwrap();
    r.sink().write_all(b"stream").await.unwrap();
    // Planted while the stream was being written.
    std::os::unix::fs::symlink(&victim, &path).unwrap();
    let e = r.finish().await.unwrap_err();
    assert!(format!("{e:#}").contains("symbolic link"), "{e:#}");
    assert!(std::fs::symlink_metadata(&path)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(leftover_partials(&path).is_empty());
}

#[test]
fn a_subvolume_counts_as_received_only_read_only_with_a_received_uuid() {
    let show = |uuid: &str, flags: &str| {
        format!(
            "restored/x\n\tName: \t\t\tx\n\tUUID: \t\t\t1b2c\n\tReceived UUID: \t\t{uuid}\n\tFlags: \t\t\t{flags}\n"
        )
    };
    let id = "9f1e2d3c-0000-4000-8000-000000000001";
    assert_eq!(subvolume_state(&show(id, "readonly")), (true, true));
    assert_eq!(subvolume_state(&show("-", "-")), (false, false));
    assert_eq!(subvolume_state(&show(id, "-")), (true, false));
    assert_eq!(subvolume_state(&show("-", "readonly")), (false, true));
}

#[test]
fn temporary_names_are_hidden_fresh_and_beside_the_file() {
    let (a, b) = (
        temp_path(Path::new("/a/b.zfs")),
        temp_path(Path::new("/a/b.zfs")),
    );
    assert_ne!(a, b);
    assert_eq!(a.parent(), Some(Path::new("/a")));
    let name = a.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(".b.zfs.offsite-") && name.ends_with(".partial"),
        "{name}"
    );
}
