//! The shape of the ids both halves use: backup ids, and the built-in tool's backup ids.

/// Whether `s` is a lower-case hyphenated UUID.
pub(crate) fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => matches!(b, b'0'..=b'9' | b'a'..=b'f'),
        })
}
