//! Property tests of the name parsers that read provider listings: [`parse_shard_name`],
//! [`BackupId::parse`] and [`dataset_name`]. A name is accepted only if it is exactly the name
//! offsite would write for what it parsed to (so a stray object can never stand in for a shard,
//! a backup or a dataset), and no name panics.

use super::*;
use proptest::prelude::*;

/// Strings made of the characters these names are built from, so that near misses are common.
fn name_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[sb0-9+\\- ]{0,32}",
        "[0-9TZ+\\-]{14,18}-(full|incr|ful)",
        "[a-zA-Z0-9%.+_ü\\-]{0,12}",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_parsed_shard_name_is_the_name_offsite_writes(name in name_like()) {
        if let Some((index, offset)) = parse_shard_name(&name) {
            prop_assert_eq!(shard_name(index, offset), name);
        }
    }

    #[test]
    fn every_shard_name_parses_back(index in 0..10_000_000_000u64, offset in 0..10u64.pow(16)) {
        prop_assert_eq!(parse_shard_name(&shard_name(index, offset)), Some((index, offset)));
    }

    #[test]
    fn a_parsed_backup_id_is_the_id_offsite_writes(name in name_like()) {
        if let Some(id) = BackupId::parse(&name) {
            prop_assert_eq!(id.to_string(), name);
            let _ = id.time();
        }
    }

    #[test]
    fn a_parsed_dataset_key_is_the_key_offsite_writes(key in name_like()) {
        if let Some(name) = dataset_name(&key) {
            prop_assert_eq!(dataset_key(&name), key);
        }
    }

    #[test]
    fn every_dataset_name_round_trips(name in any::<String>()) {
        prop_assert_eq!(dataset_name(&dataset_key(&name)), Some(name));
    }
}

#[test]
fn a_signed_number_is_not_a_shard_name() {
    assert_eq!(parse_shard_name("s+000000001-b0000000000000000"), None);
    assert_eq!(parse_shard_name("s0000000001-b+000000000000000"), None);
}
