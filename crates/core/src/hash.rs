//! Stable 64-bit hashes: FNV-1a for small keys and checkpoint digests, and a word-at-a-time hash
//! for resource content (8 bytes per step, so hashing is not a cost on the ingest path).
//!
//! `std`'s `DefaultHasher` may change between Rust releases; these digests are stored in the
//! database and compared across runs and builds, so they must never change.

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// Streaming FNV-1a.
#[derive(Debug, Clone, Copy)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self(OFFSET)
    }
}

impl Fnv64 {
    /// Adds bytes to the digest.
    pub fn write(&mut self, bytes: &[u8]) {
        let mut state = self.0;
        for &byte in bytes {
            state ^= u64::from(byte);
            state = state.wrapping_mul(PRIME);
        }
        self.0 = state;
    }

    /// Adds a field and a separator that cannot occur in text, so ("ab","c") ≠ ("a","bc").
    pub fn write_field(&mut self, bytes: &[u8]) {
        self.write(bytes);
        self.write(&[0xff]);
    }

    /// The digest so far.
    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// FNV-1a of one byte string.
pub fn fnv64(bytes: &[u8]) -> u64 {
    let mut hasher = Fnv64::default();
    hasher.write(bytes);
    hasher.finish()
}

/// A stable, fast 64-bit hash of a byte string: 8-byte words folded with a multiply-rotate and
/// finished with the MurmurHash3 64-bit finaliser. Used to tell whether a resource's content
/// changed; stored in the database, so the algorithm must never change.
pub fn content_hash(bytes: &[u8]) -> u64 {
    const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut state = (bytes.len() as u64).wrapping_mul(MULTIPLIER) ^ 0x2545_F491_4F6C_DD1D;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        state = (state ^ u64::from_le_bytes(word))
            .wrapping_mul(MULTIPLIER)
            .rotate_left(29);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        state = (state ^ u64::from_le_bytes(word))
            .wrapping_mul(MULTIPLIER)
            .rotate_left(29);
    }
    state ^= state >> 33;
    state = state.wrapping_mul(0xff51_afd7_ed55_8ccd);
    state ^= state >> 33;
    state = state.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    state ^ (state >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_hash_is_stable_and_sensitive() {
        assert_eq!(content_hash(b""), content_hash(b""));
        assert_ne!(content_hash(b"a"), content_hash(b"b"));
        assert_ne!(content_hash(b"abcdefgh"), content_hash(b"abcdefgh\0"));
        assert_ne!(
            content_hash(b"{\"value\":7.2}"),
            content_hash(b"{\"value\":7.3}")
        );
        // Pinned: stored hashes must never change meaning.
        assert_eq!(content_hash(b"tsunagi"), 0x1385_409d_82db_5661);
    }

    #[test]
    fn known_vectors() {
        assert_eq!(fnv64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
