//! Deterministic FHIR logical ids.
//!
//! An id is derived from the facility and the source record key (never from the message's
//! 発生日時), so re-ingesting the same record is an idempotent upsert. Ids must match
//! `[A-Za-z0-9\-\.]{1,64}`. When the readable form `part.part.part` fits and needs no escaping
//! it is used as is; otherwise a readable prefix is kept and a 16-hex-digit hash of the raw
//! parts makes it unique.

use crate::hash::Fnv64;

/// Longest FHIR logical id.
pub const MAX_ID_LEN: usize = 64;

/// Builds the logical id for the given key parts.
pub fn logical_id(parts: &[&str]) -> String {
    let mut readable = String::with_capacity(64);
    let mut needs_hash = parts.is_empty();
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            readable.push('.');
        }
        if part.is_empty() {
            needs_hash = true;
        }
        for ch in part.chars() {
            if ch.is_ascii_alphanumeric() || ch == '-' {
                readable.push(ch);
            } else {
                readable.push('-');
                needs_hash = true;
            }
        }
    }
    if !needs_hash && readable.len() <= MAX_ID_LEN {
        return readable;
    }
    let mut hasher = Fnv64::default();
    for part in parts {
        hasher.write_field(part.as_bytes());
    }
    let suffix = format!("{:016x}", hasher.finish());
    let keep = MAX_ID_LEN - suffix.len() - 1;
    let mut prefix: String = readable.chars().take(keep).collect();
    while prefix.ends_with('.') {
        prefix.pop();
    }
    if prefix.is_empty() {
        suffix
    } else {
        format!("{prefix}.{suffix}")
    }
}

/// True when `id` is a valid FHIR logical id.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_clean_keys_stay_readable() {
        assert_eq!(logical_id(&["0612345678", "9999013"]), "0612345678.9999013");
    }

    #[test]
    fn long_or_dirty_keys_are_hashed_but_valid_and_distinct() {
        let long = logical_id(&[
            "0612345678",
            "999999999999999",
            "20111220",
            "OML-11",
            "0000000110003540000",
            "3A010000002327101",
        ]);
        assert!(is_valid_id(&long), "{long}");
        let dirty_a = logical_id(&["0612345678", "A_B"]);
        let dirty_b = logical_id(&["0612345678", "A-B"]);
        assert!(is_valid_id(&dirty_a));
        assert_ne!(dirty_a, dirty_b);
        assert_ne!(logical_id(&["ab", "c"]), logical_id(&["a", "bc"]));
        assert!(is_valid_id(&logical_id(&[])));
        assert!(is_valid_id(&logical_id(&["", ""])));
        assert!(is_valid_id(&logical_id(&["漢字"])));
    }
}
