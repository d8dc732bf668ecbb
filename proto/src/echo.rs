//! How much of a request-supplied value a refusal repeats.
//!
//! A refusal names the value it refuses so the sender can find it, but a
//! status message travels in HTTP/2 metadata, which standard gRPC clients
//! cap at 8–16 KiB: a whole 100 KiB channel name would turn the refusal
//! into the client's own "metadata size exceeds hard limit" error. Every
//! echoed value goes through [`shown`]; [`capped`] bounds a whole message.

use std::borrow::Cow;

/// Characters of a request-supplied value a message repeats.
pub const SHOWN_CHARS: usize = 64;

/// Bytes of the longest status message the hub sends (percent-encoded in
/// the `grpc-message` header it is at most three times as long).
pub const MAX_STATUS_MESSAGE_BYTES: usize = 1024;

/// Marks where a value or a message was cut.
const CUT: char = '…';

/// `value` as a refusal repeats it: whole when at most [`SHOWN_CHARS`]
/// characters, else its first [`SHOWN_CHARS`] characters and "…".
pub fn shown(value: &str) -> Cow<'_, str> {
    match value.char_indices().nth(SHOWN_CHARS) {
        Some((end, _)) => Cow::Owned(format!("{}{CUT}", &value[..end])),
        None => Cow::Borrowed(value),
    }
}

/// `message` cut to at most `max_bytes` bytes (with "…"), on a character
/// boundary: the backstop for messages that would exceed any bound.
pub fn capped(message: &str, max_bytes: usize) -> Cow<'_, str> {
    if message.len() <= max_bytes {
        return Cow::Borrowed(message);
    }
    let mut end = max_bytes.saturating_sub(CUT.len_utf8());
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}{CUT}", &message[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_shown_whole_without_a_copy() {
        for v in [
            "",
            "tax",
            &"x".repeat(SHOWN_CHARS),
            &"税".repeat(SHOWN_CHARS),
        ] {
            assert!(matches!(shown(v), Cow::Borrowed(s) if s == v), "{v}");
        }
    }

    #[test]
    fn long_values_keep_their_first_characters_and_end_with_the_mark() {
        let ascii = "a".repeat(100 * 1024);
        assert_eq!(shown(&ascii), format!("{}…", "a".repeat(SHOWN_CHARS)));
        // Multi-byte characters are never split.
        let wide = "税".repeat(SHOWN_CHARS + 1);
        assert_eq!(shown(&wide), format!("{}…", "税".repeat(SHOWN_CHARS)));
        let mixed = format!("{}税税", "a".repeat(SHOWN_CHARS - 1));
        assert_eq!(shown(&mixed), format!("{}税…", "a".repeat(SHOWN_CHARS - 1)));
    }

    #[test]
    fn capped_messages_fit_their_bound_on_a_character_boundary() {
        assert!(matches!(capped("short", 10), Cow::Borrowed("short")));
        assert_eq!(capped(&"a".repeat(11), 10), format!("{}…", "a".repeat(7)));
        let wide = "税".repeat(1000);
        for bound in [3, 4, 5, 6, 1024] {
            let cut = capped(&wide, bound);
            assert!(cut.len() <= bound, "{bound}: {}", cut.len());
            assert!(cut.ends_with('…'), "{bound}");
        }
        assert_eq!(capped(&"税".repeat(3), 7), "税…");
    }
}
