use super::keys::{generate, load_identities, parse_recipient, Passphrase};
use super::*;
use age::secrecy::ExposeSecret;
use std::path::Path;

/// A new identity written to `dir/key.txt`, and its recipients.
fn keypair(dir: &Path) -> (Identities, Recipients) {
    let (text, recipient) = generate("2026-12-02T00:00:00Z");
    let path = dir.join("key.txt");
    std::fs::write(&path, text.expose_secret()).unwrap();
    let ids = load_identities(&path, &Passphrase::Given(String::new())).unwrap();
    let r = Recipients::new(vec![parse_recipient(&recipient).unwrap()]).unwrap();
    (ids, r)
}

fn text(len: usize) -> Bytes {
    let line = b"offsite marker line: the quick brown fox jumps over the lazy dog\n";
    Bytes::from(line.iter().copied().cycle().take(len).collect::<Vec<u8>>())
}

fn random(len: usize) -> Bytes {
    let mut rng = fastrand::Rng::with_seed(7);
    Bytes::from((0..len).map(|_| rng.u8(..)).collect::<Vec<u8>>())
}

fn codecs(r: &Recipients) -> Vec<Codec> {
    let mut out = Vec::new();
    for compression in [Compression::None, Compression::Zstd(3)] {
        for recipients in [None, Some(r.clone())] {
            out.push(Codec {
                compression,
                recipients,
            });
        }
    }
    out
}

#[test]
fn every_encoding_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let (ids, r) = keypair(dir.path());
    for plain in [Bytes::new(), text(3 << 20), random(100_000)] {
        for codec in codecs(&r) {
            let stored = codec.encode(plain.clone()).unwrap();
            let back = decode(
                codec.encoding(),
                stored.clone(),
                plain.len() as u64,
                Some(&ids),
            )
            .unwrap();
            assert_eq!(back, plain, "{codec:?}");
        }
    }
}

#[test]
fn each_shard_gets_a_fresh_file_key() {
    let dir = tempfile::tempdir().unwrap();
    let (_, r) = keypair(dir.path());
    let codec = Codec {
        compression: Compression::Zstd(3),
        recipients: Some(r),
    };
    let plain = text(1000);
    let (a, b) = (
        codec.encode(plain.clone()).unwrap(),
        codec.encode(plain).unwrap(),
    );
    assert_ne!(a, b, "two encryptions of one plaintext must differ");
}

#[test]
fn compressible_text_shrinks_and_random_data_grows_by_under_one_percent() {
    let dir = tempfile::tempdir().unwrap();
    let (_, r) = keypair(dir.path());
    let codec = Codec {
        compression: Compression::Zstd(3),
        recipients: Some(r),
    };
    let len = 4 << 20;
    let stored = codec.encode(text(len)).unwrap();
    assert!(stored.len() < len / 2, "{} of {len}", stored.len());
    let stored = codec.encode(random(len)).unwrap();
    assert!(stored.len() <= len + len / 100, "{} of {len}", stored.len());
    assert!(stored.len() as u64 <= crate::manifest::stored_bound(len as u64));
}

#[test]
fn no_plaintext_in_stored_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (_, r) = keypair(dir.path());
    let codec = Codec {
        compression: Compression::None,
        recipients: Some(r),
    };
    let stored = codec.encode(text(100_000)).unwrap();
    let marker = b"offsite marker line";
    assert!(!stored.windows(marker.len()).any(|w| w == marker));
}

#[test]
fn a_wrong_identity_is_named_and_a_missing_one_is_said() {
    let dir = tempfile::tempdir().unwrap();
    let (_, r) = keypair(dir.path());
    let other = tempfile::tempdir().unwrap();
    let (wrong, _) = keypair(other.path());
    let codec = Codec {
        compression: Compression::Zstd(3),
        recipients: Some(r),
    };
    let stored = codec.encode(text(1000)).unwrap();
    let err = decode(codec.encoding(), stored.clone(), 1000, Some(&wrong)).unwrap_err();
    assert!(matches!(err, DecodeError::WrongIdentity(_)), "{err}");
    assert!(err.to_string().contains("key.txt (age1"), "{err}");
    let err = decode(codec.encoding(), stored.clone(), 1000, None).unwrap_err();
    assert!(matches!(err, DecodeError::NoIdentity), "{err}");
}

#[test]
fn a_flipped_byte_fails_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let (ids, r) = keypair(dir.path());
    let codec = Codec {
        compression: Compression::Zstd(3),
        recipients: Some(r),
    };
    let stored = codec.encode(random(200_000)).unwrap();
    let mut bad = stored.to_vec();
    let i = bad.len() - 100;
    bad[i] ^= 1;
    let err = decode(codec.encoding(), bad.into(), 200_000, Some(&ids)).unwrap_err();
    assert!(err.to_string().contains("authentication failed"), "{err}");
}

#[test]
fn decoding_stops_at_the_recorded_length() {
    let codec = Codec {
        compression: Compression::Zstd(3),
        recipients: None,
    };
    let stored = codec.encode(text(1 << 20)).unwrap();
    let err = decode(codec.encoding(), stored.clone(), 1000, None).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::WrongLength {
                expected: 1000,
                found: 1048576
            }
        ),
        "{err}"
    );
    let err = decode(codec.encoding(), stored.clone(), 2 << 20, None).unwrap_err();
    assert!(matches!(err, DecodeError::WrongLength { .. }), "{err}");
}

#[test]
fn a_passphrase_protected_identity_opens_with_its_passphrase_only() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let (text_id, recipient) = generate("2026-12-02T00:00:00Z");
    let mut scrypt = age::scrypt::Recipient::new("correct horse".to_string().into());
    scrypt.set_work_factor(2);
    let enc =
        age::Encryptor::with_recipients(std::iter::once(&scrypt as &dyn age::Recipient)).unwrap();
    let armor =
        age::armor::ArmoredWriter::wrap_output(Vec::new(), age::armor::Format::AsciiArmor).unwrap();
    let mut w = enc.wrap_output(armor).unwrap();
    w.write_all(text_id.expose_secret().as_bytes()).unwrap();
    let file = w.finish().unwrap().finish().unwrap();
    let path = dir.path().join("protected.key");
    std::fs::write(&path, file).unwrap();

    let ids = load_identities(&path, &Passphrase::Given("correct horse".into())).unwrap();
    assert_eq!(ids.recipients(), vec![recipient]);
    let err = load_identities(&path, &Passphrase::Given("wrong".into()))
        .err()
        .unwrap();
    assert!(err.contains("wrong passphrase"), "{err}");
}

#[test]
fn a_file_that_is_not_an_identity_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    std::fs::write(&path, "# comment\nage1notasecret\n").unwrap();
    let err = load_identities(&path, &Passphrase::Given(String::new()))
        .err()
        .unwrap();
    assert!(err.contains("line 2"), "{err}");
    let err = parse_recipient("age1notakey").unwrap_err();
    assert!(err.contains("not an age X25519 recipient"), "{err}");
    let err = parse_recipient("AGE-SECRET-KEY-1XYZSECRET").unwrap_err();
    assert!(
        err.contains("SECRET key") && !err.contains("XYZSECRET"),
        "{err}"
    );
}

#[test]
fn a_cut_shard_is_damaged_for_every_encoding_and_frames_carry_their_size() {
    let dir = tempfile::tempdir().unwrap();
    let (ids, r) = keypair(dir.path());
    let plain = text(100_000);
    for (compression, recipients) in [
        (Compression::Zstd(3), None),
        (Compression::None, Some(r.clone())),
        (Compression::Zstd(3), Some(r.clone())),
    ] {
        let codec = Codec {
            compression,
            recipients,
        };
        let stored = codec.encode(plain.clone()).unwrap();
        if codec.recipients.is_none() {
            let size = zstd::zstd_safe::get_frame_content_size(&stored).ok();
            assert_eq!(size, Some(Some(100_000)), "the frame names its size");
        }
        let cut = stored.slice(..stored.len() - 10);
        let err = decode(codec.encoding(), cut, 100_000, Some(&ids)).unwrap_err();
        assert!(matches!(err, DecodeError::Damaged(_)), "{codec:?}: {err}");
    }
}
