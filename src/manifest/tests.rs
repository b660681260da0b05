use super::*;

#[test]
fn format_2_carries_a_checksum_that_catches_one_flipped_digit() {
    let m = sample(&[b"abcd", b"ef"]);
    let text = String::from_utf8(m.to_json()).unwrap();
    assert!(text.contains("\"checksum\""), "{text}");
    let sha = &m.shards[1].sha256;
    let flipped_char = if sha.starts_with('0') { "1" } else { "0" };
    let flipped = text.replacen(sha.as_str(), &format!("{flipped_char}{}", &sha[1..]), 1);
    let err = Manifest::from_json(flipped.as_bytes()).unwrap_err();
    assert!(err.contains("checksum does not match"), "{err}");
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_object_mut().unwrap().remove("checksum");
    let err = Manifest::from_json(v.to_string().as_bytes()).unwrap_err();
    assert!(err.contains("no checksum"), "{err}");
}

#[test]
fn checksum_is_canonical_and_survives_unknown_fields_and_layout() {
    let m = sample(&[b"abcd", b"ef"]);
    let mut v: serde_json::Value = serde_json::from_slice(&m.to_json()).unwrap();
    let map = v.as_object_mut().unwrap();
    map.remove("checksum");
    map.insert("zz_future".into(), serde_json::json!({"b": 1, "a": [2]}));
    let sum = checksum_of(map);
    map.insert("checksum".into(), sum.into());
    // Compact, differently ordered text of the same value still checks.
    let compact = serde_json::to_vec(&v).unwrap();
    assert_eq!(Manifest::from_json(&compact), Ok(m));
}

#[test]
fn format_1_without_checksum_is_still_read() {
    let mut m = sample(&[b"abcd", b"ef"]);
    m.format = 1;
    for s in &mut m.shards {
        (s.md5, s.sha1) = (None, None);
    }
    let text = String::from_utf8(m.to_json()).unwrap();
    assert!(
        !text.contains("checksum") && !text.contains("md5"),
        "{text}"
    );
    assert_eq!(Manifest::from_json(text.as_bytes()), Ok(m));
    let err = Manifest::from_json(br#"{"format": 3}"#).unwrap_err();
    assert!(err.contains("upgrade offsite"), "{err}");
}

/// A manifest of an encrypted backup with its secrets (as a backup builds it), and the
/// identities that open it.
fn encrypted_sample() -> (Manifest, crate::codec::Identities, tempfile::TempDir) {
    use crate::codec::keys::{generate, load_identities, parse_recipient, Passphrase};
    use age::secrecy::ExposeSecret;
    let dir = tempfile::tempdir().unwrap();
    let (text, recipient) = generate("now");
    std::fs::write(dir.path().join("k"), text.expose_secret()).unwrap();
    let ids = load_identities(&dir.path().join("k"), &Passphrase::Given(String::new())).unwrap();
    let mut m = sample(&[b"abcd", b"ef"]);
    m.encoding = Encoding {
        compression: Some(layout::Compression::Zstd),
        encryption: Some(layout::Encryption::Age),
    };
    m.source = "pg_dumpall --password=hunter2".into();
    for s in &mut m.shards {
        s.plain_length = Some(s.length);
        s.plain_sha256 = Some(crate::hashing::sha256(s.index.to_string().as_bytes()));
        s.length += 100;
    }
    let r = crate::codec::Recipients::new(vec![parse_recipient(&recipient).unwrap()]).unwrap();
    (m.seal(&r).unwrap(), ids, dir)
}

#[test]
fn an_encrypted_manifest_shows_no_secret_and_opens_with_the_identity() {
    let (sealed, ids, _dir) = encrypted_sample();
    let text = String::from_utf8(sealed.to_json()).unwrap();
    assert!(
        !text.contains("hunter2") && !text.contains("plain_sha256"),
        "{text}"
    );
    assert!(
        text.contains("\"encryption\": \"age\"") && text.contains("age1"),
        "{text}"
    );
    let mut m = Manifest::from_json(text.as_bytes()).unwrap();
    assert!(m.is_sealed());
    assert_eq!(
        m.object(&m.shards[1]),
        format!("{}.zst.age", layout::shard_name(1, 4))
    );
    m.unseal(&ids).unwrap();
    assert_eq!(m.source, "pg_dumpall --password=hunter2");
    assert!(m.shards.iter().all(|s| s.plain_sha256.is_some()) && !m.is_sealed());
    // Written again after opening: still nothing in the clear.
    let again = String::from_utf8(m.to_json()).unwrap();
    assert!(
        !again.contains("hunter2") && !again.contains("plain_sha256"),
        "{again}"
    );
    assert_eq!(Manifest::from_json(again.as_bytes()).unwrap(), sealed);
}

#[test]
fn secrets_in_the_clear_of_an_encrypted_manifest_are_refused() {
    let (sealed, _, _dir) = encrypted_sample();
    let mut v: serde_json::Value = serde_json::from_slice(&sealed.to_json()).unwrap();
    let map = v.as_object_mut().unwrap();
    map.remove("checksum");
    map.insert("source".into(), "leaked".into());
    let sum = checksum_of(map);
    map.insert("checksum".into(), sum.into());
    let err = Manifest::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    assert!(err.contains("in the clear"), "{err}");
}

#[test]
fn offsets_follow_plaintext_lengths_and_names_carry_the_suffix() {
    let mut m = sample(&[b"abcd", b"ef"]);
    m.encoding.compression = Some(layout::Compression::Zstd);
    for s in &mut m.shards {
        s.plain_length = Some(s.length);
        s.plain_sha256 = Some(s.sha256.clone());
        s.length = 30; // compressed data can grow
    }
    let back = Manifest::from_json(&m.to_json()).unwrap();
    assert_eq!(back, m);
    assert_eq!(
        back.object(&back.shards[0]),
        format!("{}.zst", layout::shard_name(0, 0))
    );
    assert_eq!(
        back.shards[1].plain_sha(back.encoding),
        m.shards[1].plain_sha256.as_deref()
    );
    let mut plain = sample(&[b"abcd"]);
    plain.shards[0].plain_length = Some(4);
    let err = Manifest::from_json(&plain.to_json()).unwrap_err();
    assert!(err.contains("plaintext fields"), "{err}");
}

#[test]
fn round_trip() {
    let m = sample(&[b"abcd", b"ef"]);
    assert_eq!(Manifest::from_json(&m.to_json()), Ok(m));
}

#[test]
fn rejects_gaps_and_bad_totals() {
    let mut m = sample(&[b"abcd", b"ef"]);
    m.shards[1].offset = 5;
    assert!(Manifest::from_json(&m.to_json())
        .unwrap_err()
        .contains("not contiguous"));
    let mut m = sample(&[b"abcd"]);
    m.total_bytes = 9;
    assert!(Manifest::from_json(&m.to_json())
        .unwrap_err()
        .contains("add up"));
    assert!(Manifest::from_json(b"{")
        .unwrap_err()
        .contains("does not parse"));
}

#[test]
fn same_stream_tells_encodings_and_recipients_apart() {
    let m = sample(&[b"abcd", b"ef"]);
    let mut later = m.clone();
    later.created = "2026-12-02T00:00:00Z".into();
    assert!(same_stream(&m, &later), "only the creation time differs");
    let mut compressed = m.clone();
    compressed.encoding.compression = Some(crate::layout::Compression::Zstd);
    assert!(!same_stream(&m, &compressed));
    let mut other_keys = m.clone();
    other_keys.recipients = vec!["age1other".into()];
    assert!(!same_stream(&m, &other_keys));
    let mut other_plain = m.clone();
    other_plain.shards[1].plain_length = Some(3);
    assert!(!same_stream(&m, &other_plain));
}

#[test]
fn an_erasure_coded_manifest_round_trips_and_is_checked() {
    let shards: [&[u8]; 2] = [b"first shard bytes", b"second"];
    let mut stored = Vec::new();
    for s in shards {
        stored.push(bytes::Bytes::copy_from_slice(s));
    }
    let scheme = crate::erasure::Scheme { k: 2, m: 1 };
    let (m, pieces) =
        crate::gaps::fixture::erasure(sample(&shards), &stored, scheme, &["a", "b", "c", "d"]);
    assert_eq!(Manifest::from_json(&m.to_json()).unwrap(), m);
    assert_eq!(m.scheme(), Some(scheme));
    assert_eq!(pieces[0].len(), 3);
    assert_eq!(
        m.piece_object(&m.shards[1], 2),
        format!("{}.p3of3", m.object(&m.shards[1]))
    );
    let e = m.erasure.as_ref().unwrap();
    assert_eq!(
        (e.holder(0, 0), e.holder(1, 2), e.holder(3, 1)),
        ("a", "d", "a")
    );

    let broken = |f: &dyn Fn(&mut Manifest)| {
        let mut bad = m.clone();
        f(&mut bad);
        Manifest::from_json(&bad.to_json()).unwrap_err()
    };
    let e = broken(&|b| b.shards[0].pieces.pop().map(drop).unwrap_or(()));
    assert!(e.contains("does not list 3 well-formed pieces"), "{e}");
    let e = broken(&|b| b.shards[1].pieces[0].length += 2);
    assert!(e.contains("pieces of 4 bytes"), "{e}");
    let e = broken(&|b| {
        b.erasure.as_mut().unwrap().providers = vec!["a".into(), "a".into(), "b".into()]
    });
    assert!(e.contains("does not list 3 distinct providers"), "{e}");
    let e = broken(&|b| b.erasure = None);
    assert!(
        e.contains("lists erasure-coded pieces but the backup names no code"),
        "{e}"
    );
    let e = broken(&|b| b.erasure.as_mut().unwrap().m = 0);
    assert!(e.contains("is not \"k+m\""), "{e}");
    let mut other = m.clone();
    other.shards[0].pieces[2].sha256 = "0".repeat(64);
    assert!(!same_stream(&m, &other));
}

#[test]
fn erasure_fixture_places_one_piece_of_a_shard_per_provider() {
    use crate::provider::MemoryProvider;
    let shards: [&[u8]; 3] = [b"aaaa", b"bbbb", b"cc"];
    let stored: Vec<bytes::Bytes> = shards
        .iter()
        .map(|s| bytes::Bytes::copy_from_slice(s))
        .collect();
    let scheme = crate::erasure::Scheme { k: 2, m: 1 };
    let names = ["a", "b", "c", "d"];
    let (m, pieces) = crate::gaps::fixture::erasure(sample(&shards), &stored, scheme, &names);
    let mem: Vec<MemoryProvider> = names.iter().map(|n| MemoryProvider::new(n)).collect();
    let pairs: Vec<(&str, &MemoryProvider)> = names.iter().copied().zip(&mem).collect();
    crate::gaps::fixture::store_pieces(&pairs, &m, &pieces);
    let counts: Vec<usize> = mem.iter().map(|p| p.paths().len()).collect();
    // 9 pieces over 4 providers (2 + 2 + 3 + 2... by rotation), plus a manifest each.
    assert_eq!(counts.iter().sum::<usize>(), 9 + 4);
    assert!(
        mem[3].paths().iter().any(|p| p.ends_with(".p3of3")),
        "{:?}",
        mem[3].paths()
    );
}

/// What `to_json` wrote before it streamed: the manifest as one JSON value (keys sorted),
/// its checksum over the compact form, pretty-printed.
fn to_json_through_a_value(m: &Manifest) -> Vec<u8> {
    let mut value = serde_json::to_value(m.in_the_clear()).unwrap();
    let map = value.as_object_mut().unwrap();
    if m.format >= 2 {
        let sum = checksum_of(map);
        map.insert("checksum".into(), sum.into());
    }
    let mut v = serde_json::to_vec_pretty(&value).unwrap();
    v.push(b'\n');
    v
}

#[test]
fn streamed_manifests_are_byte_for_byte_those_written_through_a_value() {
    let mut v1 = sample(&[b"abcd", b"ef"]);
    v1.format = 1;
    let shards: [&[u8]; 2] = [b"first shard bytes", b"second"];
    let stored: Vec<bytes::Bytes> = shards
        .iter()
        .map(|s| bytes::Bytes::copy_from_slice(s))
        .collect();
    let scheme = crate::erasure::Scheme { k: 2, m: 1 };
    let (erasure, _) =
        crate::gaps::fixture::erasure(sample(&shards), &stored, scheme, &["a", "b", "c"]);
    let (sealed, ids, _dir) = encrypted_sample();
    let mut opened = sealed.clone();
    opened.unseal(&ids).unwrap();
    for m in [
        sample(&[b"abcd", b"ef"]),
        sample(&[]),
        v1,
        erasure,
        sealed,
        opened,
    ] {
        let text = m.to_json();
        assert_eq!(
            String::from_utf8(text.clone()).unwrap(),
            String::from_utf8(to_json_through_a_value(&m)).unwrap()
        );
        let mut streamed = Vec::new();
        m.write_json(&mut streamed).unwrap();
        assert_eq!(streamed, text);
    }
}

/// Manifests written by offsite before manifests were streamed (f12011b's `to_json`, through
/// a JSON value): they parse, and are written again byte for byte.
#[test]
fn manifests_written_before_streaming_read_and_write_back_byte_for_byte() {
    for (name, stored) in [
        ("zstd", &include_bytes!("fixtures/zstd-format2.json")[..]),
        (
            "erasure",
            &include_bytes!("fixtures/erasure-2+1-format2.json")[..],
        ),
    ] {
        let m = Manifest::from_json(stored).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(m.shards.len(), 3, "{name}");
        assert_eq!(
            String::from_utf8(m.to_json()).unwrap(),
            String::from_utf8(stored.to_vec()).unwrap(),
            "{name}"
        );
    }
}
