//! Text as one component of a URL or URI: percent-encoded but for the unreserved characters
//! (RFC 3986 §2.3), so a patient id, a file name or a control id cannot add a `/`, `?` or `:`.

/// `text` percent-encoded (UTF-8 bytes) but for `A-Z a-z 0-9 - . _ ~`.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unreserved_characters_stay() {
        assert_eq!(percent_encode("a-Z.0_~"), "a-Z.0_~");
        assert_eq!(percent_encode("1/2 ?:"), "1%2F2%20%3F%3A");
        assert_eq!(percent_encode("山"), "%E5%B1%B1");
    }
}
