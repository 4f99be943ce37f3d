//! Small text helpers shared by the subsystems: machine names and hex.

/// True when `s` is non-empty and only `[a-z0-9_]`.
pub fn is_name_chars(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// A machine name (plugin, stage, item type, role): 1 to `max_len` bytes of
/// `[a-z0-9_]`, starting with a letter.
pub fn is_machine_name(s: &str, max_len: usize) -> bool {
    s.len() <= max_len && s.starts_with(|c: char| c.is_ascii_lowercase()) && is_name_chars(s)
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            // Writing to a String cannot fail.
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_names() {
        assert!(is_machine_name("a", 1));
        assert!(is_machine_name("site_ops2", 64));
        for bad in ["", "2nd", "_x", "Ab", "a-b", "a b", "é"] {
            assert!(!is_machine_name(bad, 64), "{bad:?}");
        }
        assert!(!is_machine_name("ab", 1));
        assert!(is_name_chars("2nd_x"));
        assert!(!is_name_chars(""));
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
