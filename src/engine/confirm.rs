//! Confirming by listing: rclone's `rcat` and `copyto` can end in success and leave a partial
//! object, so an upload or copy counts only once a listing shows the object at its recorded
//! length. Backup and sync both ask this module.

use crate::provider::ObjectInfo;
use std::collections::HashMap;

/// A provider's listing of one directory, object name to size.
#[derive(Debug, Default, Clone)]
pub struct Listed(HashMap<String, u64>);

impl Listed {
    pub fn new(listing: impl IntoIterator<Item = ObjectInfo>) -> Listed {
        Listed(listing.into_iter().map(|o| (o.path, o.size)).collect())
    }

    pub fn size(&self, name: &str) -> Option<u64> {
        self.0.get(name).copied()
    }

    /// `Ok` when `name` is listed at exactly `len` bytes; else what the provider holds instead.
    pub fn confirm(&self, name: &str, len: u64) -> Result<(), Mismatch> {
        match self.size(name) {
            Some(found) if found == len => Ok(()),
            found => Err(Mismatch {
                found,
                expected: len,
            }),
        }
    }
}

/// An object that is not listed at its recorded length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the provider holds {}, not {expected} bytes", match found { Some(s) => format!("{s} bytes"), None => "nothing".to_string() })]
pub struct Mismatch {
    pub found: Option<u64>,
    pub expected: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(items: &[(&str, u64)]) -> Listed {
        Listed::new(items.iter().map(|(p, s)| ObjectInfo {
            path: p.to_string(),
            size: *s,
            ..Default::default()
        }))
    }

    #[test]
    fn only_an_object_at_its_recorded_length_is_confirmed() {
        let l = listed(&[("s0", 10), ("s1", 4)]);
        assert!(l.confirm("s0", 10).is_ok());
        let short = l.confirm("s1", 10).unwrap_err();
        assert_eq!(
            short.to_string(),
            "the provider holds 4 bytes, not 10 bytes"
        );
        let gone = l.confirm("s2", 10).unwrap_err();
        assert_eq!(gone.to_string(), "the provider holds nothing, not 10 bytes");
    }
}
