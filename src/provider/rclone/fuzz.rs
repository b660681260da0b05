//! Property tests of what offsite reads from rclone's stdout: `lsjson` listings
//! ([`parse_lsjson`]) and `about --json` ([`Usage`]). Damaged or hostile output (a provider's
//! backend, or a broken rclone, chooses these bytes) is an error or a listing, never a panic,
//! and no size wraps around.

use super::{parse_fast_hashes, parse_lsjson};
use crate::mutate;
use crate::provider::Usage;
use proptest::prelude::*;

/// `rclone lsjson -R --files-only --no-mimetype --no-modtime` output of rclone 1.60, with a
/// field offsite ignores (`Hashes`, from `--hash`) to show that extra fields are fine.
const LISTING: &str = r#"[
{"Path":"h/d/20261121T020000Z-full/manifest.json","Name":"manifest.json","Size":1234,"IsDir":false},
{"Path":"h/d/20261121T020000Z-full/s0000000000-b0000000000000000","Name":"s0000000000-b0000000000000000","Size":1048576,"IsDir":false,"Hashes":{"md5":"9e107d9d372bb6826bd81d3542a419d6"}},
{"Path":"h/d/unknown-size","Name":"unknown-size","Size":-1,"IsDir":false}
]
"#;

const ABOUT: &str =
    r#"{"total":1099511627776,"used":549755813888,"free":549755813888,"trashed":0}"#;

fn check_listing(bytes: &[u8]) -> Result<(), TestCaseError> {
    match parse_lsjson(bytes) {
        Ok(objects) => {
            for o in &objects {
                prop_assert!(o.size <= i64::MAX as u64, "{o:?}: a size that wrapped");
            }
        }
        Err(e) => prop_assert!(!e.to_string().is_empty()),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_damaged_listing_is_an_error_or_a_listing(edits in mutate::edits()) {
        check_listing(&mutate::apply(LISTING.as_bytes(), &edits))?;
    }

    #[test]
    fn random_bytes_are_no_listing_and_no_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..256)
    ) {
        check_listing(&bytes)?;
    }

    #[test]
    fn any_listing_rclone_can_print_is_read_back(
        entries in prop::collection::vec((any::<String>(), any::<i64>()), 0..8)
    ) {
        let json: Vec<serde_json::Value> = entries
            .iter()
            .map(|(p, s)| serde_json::json!({"Path": p, "Name": p, "Size": s, "IsDir": false}))
            .collect();
        let got = parse_lsjson(&serde_json::to_vec(&json).unwrap()).unwrap();
        let want: Vec<(String, u64)> =
            entries.into_iter().map(|(p, s)| (p, s.max(0) as u64)).collect();
        let got: Vec<(String, u64)> = got.into_iter().map(|o| (o.path, o.size)).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn damaged_about_output_is_an_error_or_a_usage(edits in mutate::edits()) {
        let bytes = mutate::apply(ABOUT.as_bytes(), &edits);
        let _ = serde_json::from_slice::<Usage>(&bytes);
    }
}

#[test]
fn the_seeds_parse() {
    let l = parse_lsjson(LISTING.as_bytes()).unwrap();
    assert_eq!(
        l.iter().map(|o| o.size).collect::<Vec<_>>(),
        [1234, 1 << 20, 0]
    );
    assert_eq!(
        serde_json::from_slice::<Usage>(ABOUT.as_bytes())
            .unwrap()
            .total,
        Some(1 << 40)
    );
}

#[test]
fn listed_hashes_are_read_lower_case_and_empty_ones_dropped() {
    let out =
        br#"[{"Path":"a","Size":3,"Hashes":{"md5":"900150983CD24FB0D6963F7D28E17F72","sha1":""}},
        {"Path":"b","Size":1,"Hashes":null},{"Path":"c","Size":1}]"#;
    let l = parse_lsjson(out).unwrap();
    assert_eq!(
        l[0].md5.as_deref(),
        Some("900150983cd24fb0d6963f7d28e17f72")
    );
    assert_eq!(l[0].sha1, None, "rclone lists \"\" for a hash it lacks");
    assert!(l[1..].iter().all(|o| o.md5.is_none() && o.sha1.is_none()));
}

#[test]
fn auto_lists_only_hashes_the_backend_stores() {
    let features = |hashes: &str, slow: bool| {
        format!(
            r#"{{"Name":"x","Hashes":[{hashes}],"Features":{{"About":true,"SlowHash":{slow}}}}}"#
        )
    };
    let got = |s: String| parse_fast_hashes(s.as_bytes());
    assert_eq!(
        got(features(r#""md5","sha1","crc32""#, false)),
        ["MD5", "SHA-1"]
    );
    assert_eq!(got(features(r#""md5""#, false)), ["MD5"], "S3-like");
    assert!(
        got(features(r#""md5","sha1""#, true)).is_empty(),
        "local, sftp"
    );
    assert!(got(features("", false)).is_empty(), "no hashes at all");
    assert!(parse_fast_hashes(b"not json").is_empty());
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let depth = 100_000;
    let doc = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    assert!(parse_lsjson(doc.as_bytes()).is_err());
}
