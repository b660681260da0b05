//! Mutation strategies for the parser fuzz tests (test builds only).
//!
//! Random bytes rarely get past a parser's first check, so the fuzz tests start from a valid
//! document (a manifest, a listing, a config) and damage it the ways a faulty disk, a hostile
//! provider or a typo would: flip, insert, delete or duplicate bytes, cut the document short,
//! replace a number with a huge, negative or fractional one, or nest a value thousands of levels
//! deep. Every edit applies to any text, so one set of strategies serves JSON and TOML alike.

use proptest::prelude::*;

/// Numbers that break naive arithmetic, casts and parsers.
pub const NASTY_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "-0",
    "1.5",
    "1e308",
    "-1e308",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999999999",
    "NaN",
];

/// One change to a document. Positions are taken modulo the document's length, so any edit
/// applies to any document.
#[derive(Debug, Clone)]
pub enum Edit {
    Flip {
        at: usize,
        mask: u8,
    },
    Insert {
        at: usize,
        byte: u8,
    },
    Delete {
        at: usize,
        len: usize,
    },
    Duplicate {
        at: usize,
        len: usize,
    },
    Truncate {
        at: usize,
    },
    /// Replace the `nth` run of ASCII digits with `NASTY_NUMBERS[with]`.
    Number {
        nth: usize,
        with: usize,
    },
    /// Replace the `nth` run of ASCII digits with that run nested `depth` arrays deep.
    Nest {
        nth: usize,
        depth: usize,
    },
}

/// A single edit of any kind; number edits are as likely as byte edits.
pub fn edit() -> impl Strategy<Value = Edit> {
    let at = any::<usize>();
    prop_oneof![
        (at, 1..=255u8).prop_map(|(at, mask)| Edit::Flip { at, mask }),
        (at, any::<u8>()).prop_map(|(at, byte)| Edit::Insert { at, byte }),
        (at, 1..64usize).prop_map(|(at, len)| Edit::Delete { at, len }),
        (at, 1..64usize).prop_map(|(at, len)| Edit::Duplicate { at, len }),
        at.prop_map(|at| Edit::Truncate { at }),
        (at, 0..NASTY_NUMBERS.len()).prop_map(|(nth, with)| Edit::Number { nth, with }),
        (at, 0..NASTY_NUMBERS.len()).prop_map(|(nth, with)| Edit::Number { nth, with }),
        (at, 1..5_000usize).prop_map(|(nth, depth)| Edit::Nest { nth, depth }),
    ]
}

/// One to four edits, applied in order.
pub fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(edit(), 1..=4)
}

/// `doc` with `edits` applied.
pub fn apply(doc: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut v = doc.to_vec();
    for e in edits {
        apply_one(&mut v, e);
    }
    v
}

fn apply_one(v: &mut Vec<u8>, e: &Edit) {
    let pos = |at: usize, len: usize| if len == 0 { 0 } else { at % len };
    match *e {
        Edit::Flip { at, mask } if !v.is_empty() => {
            let i = pos(at, v.len());
            v[i] ^= mask;
        }
        Edit::Flip { .. } => {}
        Edit::Insert { at, byte } => v.insert(pos(at, v.len() + 1), byte),
        Edit::Delete { at, len } => {
            let i = pos(at, v.len());
            v.drain(i..(i + len).min(v.len()));
        }
        Edit::Duplicate { at, len } => {
            let i = pos(at, v.len());
            let piece = v[i..(i + len).min(v.len())].to_vec();
            v.splice(i..i, piece);
        }
        Edit::Truncate { at } => v.truncate(pos(at, v.len())),
        Edit::Number { nth, with } => replace_number(v, nth, NASTY_NUMBERS[with].as_bytes()),
        Edit::Nest { nth, depth } => {
            let mut nested = vec![b'['; depth];
            nested.push(b'1');
            nested.extend(std::iter::repeat_n(b']', depth));
            replace_number(v, nth, &nested);
        }
    }
}

/// Replaces the `nth` (modulo their count) run of ASCII digits in `v` with `with`.
fn replace_number(v: &mut Vec<u8>, nth: usize, with: &[u8]) {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < v.len() {
        if v[i].is_ascii_digit() {
            let start = i;
            while i < v.len() && v[i].is_ascii_digit() {
                i += 1;
            }
            runs.push(start..i);
        } else {
            i += 1;
        }
    }
    if !runs.is_empty() {
        let r = runs[nth % runs.len()].clone();
        v.splice(r, with.iter().copied());
    }
}

/// Numbers a parser must survive where it expects a count or a size: small, huge, and at the
/// edges of u64 and i64.
pub fn interesting_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..16u64,
        any::<u64>(),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        Just(1 << 63),
        Just(i64::MAX as u64),
        (1u64 << 62)..u64::MAX,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_do_what_they_say() {
        let doc = br#"{"a": 12, "b": [3]}"#;
        let num = |nth, with| apply(doc, &[Edit::Number { nth, with }]);
        assert_eq!(num(0, 1), br#"{"a": -1, "b": [3]}"#);
        assert_eq!(num(3, 1), br#"{"a": 12, "b": [-1]}"#);
        let nest = apply(doc, &[Edit::Nest { nth: 1, depth: 2 }]);
        assert_eq!(nest, br#"{"a": 12, "b": [[[1]]]}"#);
        assert_eq!(apply(doc, &[Edit::Truncate { at: 4 }]), br#"{"a""#);
        assert_eq!(apply(b"", &edits_of_every_kind()), b"\0");
    }

    fn edits_of_every_kind() -> Vec<Edit> {
        vec![
            Edit::Flip { at: 3, mask: 1 },
            Edit::Delete { at: 3, len: 9 },
            Edit::Duplicate { at: 3, len: 9 },
            Edit::Truncate { at: 3 },
            Edit::Number { nth: 3, with: 3 },
            Edit::Nest { nth: 3, depth: 3 },
            Edit::Insert { at: 3, byte: 0 },
        ]
    }
}
