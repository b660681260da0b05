//! Property tests of [`Manifest::from_json`], the parser of what providers return as
//! `manifest.json`: whatever the bytes, it returns a manifest that holds together or an error
//! that says so, and never panics. Seeds come from [`sample`] through [`Manifest::to_json`], so
//! the tests follow the format as it changes.

use super::{sample, Manifest};
use crate::layout::{parse_shard_name, BackupId};
use crate::mutate::{self, interesting_u64};
use proptest::prelude::*;

/// A valid manifest of three shards, as a provider would serve it.
fn seed() -> Vec<u8> {
    sample(&[b"abcd", b"efgh", b"ij"]).to_json()
}

/// A parsed manifest describes one contiguous stream without wrapping arithmetic; a rejection
/// is an error message about the manifest.
fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    let m = match Manifest::from_json(bytes) {
        Ok(m) => m,
        Err(e) => {
            prop_assert!(e.contains("manifest"), "unclear rejection: {e:?}");
            return Ok(());
        }
    };
    prop_assert!(BackupId::parse(&m.backup_id).is_some());
    let mut offset = 0u64;
    for (i, s) in m.shards.iter().enumerate() {
        prop_assert_eq!(s.index, i as u64);
        prop_assert_eq!(s.offset, offset);
        prop_assert!(s.length > 0 && s.length <= m.shard_size);
        prop_assert_eq!(
            parse_shard_name(&s.name(Default::default())),
            Some((s.index, s.offset))
        );
        offset = s.offset.checked_add(s.length).ok_or_else(|| {
            TestCaseError::fail(format!("shard {i} ends past 2^64 bytes but was accepted"))
        })?;
    }
    prop_assert_eq!(offset, m.total_bytes);
    prop_assert!(Manifest::from_json(&m.to_json()).is_ok(), "no round trip");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_damaged_manifest_is_rejected_or_consistent(edits in mutate::edits()) {
        check(&mutate::apply(&seed(), &edits))?;
    }

    #[test]
    fn random_bytes_are_rejected_without_a_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..512)
    ) {
        check(&bytes)?;
    }

    /// A hostile provider can write any numbers into a well-formed manifest (and recompute
    /// anything derived from them): lengths whose offsets and total agree only modulo 2^64 must
    /// not pass.
    #[test]
    fn shard_numbers_that_only_add_up_modulo_2_64_are_rejected(
        lengths in prop::collection::vec(interesting_u64(), 1..4),
        shard_size in prop_oneof![Just(u64::MAX), interesting_u64()],
    ) {
        let mut m = sample(&[b"a", b"b", b"c"]);
        m.shards.truncate(lengths.len());
        let mut offset = 0u64;
        for (s, len) in m.shards.iter_mut().zip(&lengths) {
            s.offset = offset;
            s.length = *len;
            offset = offset.wrapping_add(*len);
        }
        m.shard_size = shard_size;
        m.total_bytes = offset;
        check(&m.to_json())?;
    }

    #[test]
    fn any_numbers_in_a_manifest_are_rejected_or_consistent(
        fields in prop::collection::vec((0..4usize, 0..3usize, interesting_u64()), 1..5)
    ) {
        let mut m = sample(&[b"abcd", b"efgh", b"ij"]);
        for (field, shard, v) in fields {
            let s = &mut m.shards[shard];
            match field {
                0 => s.index = v,
                1 => s.offset = v,
                2 => s.length = v,
                _ => m.total_bytes = v,
            }
        }
        check(&m.to_json())?;
    }
}

#[test]
fn the_seed_is_valid() {
    assert!(Manifest::from_json(&seed()).is_ok());
}

#[test]
fn shard_lengths_that_overflow_u64_are_rejected() {
    let mut m = sample(&[b"a", b"b"]);
    m.shard_size = u64::MAX;
    m.shards[0].length = 5;
    m.shards[1].offset = 5;
    m.shards[1].length = u64::MAX - 2;
    m.total_bytes = 2; // 2^64 + 2, wrapped
    let e = Manifest::from_json(&m.to_json()).unwrap_err();
    assert!(e.contains("shard 1 ends past 2^64"), "{e}");
}

#[test]
fn a_shard_offset_too_large_for_a_shard_name_is_rejected() {
    let mut m = sample(&[b"a", b"b"]);
    m.shard_size = u64::MAX;
    m.shards[0].length = 1 << 63;
    m.shards[1].offset = 1 << 63;
    m.total_bytes = (1 << 63) + 1;
    let e = Manifest::from_json(&m.to_json()).unwrap_err();
    assert!(e.contains("shard 1 lies beyond"), "{e}");
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let depth = 100_000;
    let mut doc = b"{\"format\": ".to_vec();
    doc.extend(std::iter::repeat_n(b'[', depth));
    doc.extend(std::iter::repeat_n(b']', depth));
    doc.push(b'}');
    let e = Manifest::from_json(&doc).unwrap_err();
    assert!(e.contains("does not parse"), "{e}");
}

#[test]
fn deep_nesting_in_an_unknown_field_is_an_error_not_a_stack_overflow() {
    let mut doc = sample(&[b"abcd"]).to_json();
    let depth = 100_000;
    let mut deep = b"\"zz_future\": ".to_vec();
    deep.extend(std::iter::repeat_n(b'[', depth));
    deep.extend(std::iter::repeat_n(b']', depth));
    deep.extend(b",\n");
    doc.splice(4..4, deep);
    let e = Manifest::from_json(&doc).unwrap_err();
    assert!(e.contains("does not parse"), "{e}");
}
