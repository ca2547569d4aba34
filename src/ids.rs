//! Validation of container and exec ids before any path is built from them,
//! and `shorten`, which cuts any hostile string to a size fit for an error
//! message.
//!
//! The rule is containerd's identifier rule: `[A-Za-z0-9]+([._-][A-Za-z0-9]+)*`,
//! at most 76 characters. An id that passes can be used as one path component.

/// Longest id containerd accepts.
pub const MAX_ID_LEN: usize = 76;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{what} {id:?} is longer than {MAX_ID_LEN} characters")]
    TooLong { what: &'static str, id: String },
    #[error("{what} {id:?} must match [A-Za-z0-9]+([._-][A-Za-z0-9]+)*")]
    Invalid { what: &'static str, id: String },
}

/// A hostile string cut to a size fit for an error message.
pub fn shorten(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        return s.to_string();
    }
    s.chars().take(MAX).collect::<String>() + "..."
}

/// Checks `id` against containerd's identifier rule; `what` names the id in the error.
pub fn validate(what: &'static str, id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty { what });
    }
    if id.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            what,
            id: id.chars().take(MAX_ID_LEN).collect::<String>() + "...",
        });
    }
    let mut prev_sep = true; // the first character must be alphanumeric
    for c in id.chars() {
        let sep = matches!(c, '.' | '_' | '-');
        if !(c.is_ascii_alphanumeric() || sep) || (sep && prev_sep) {
            return Err(IdError::Invalid {
                what,
                id: id.to_string(),
            });
        }
        prev_sep = sep;
    }
    if prev_sep {
        return Err(IdError::Invalid {
            what,
            id: id.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_containerd_style_ids() {
        for id in ["a", "abc-123", "k8s.io_x", &"f".repeat(64), &"a".repeat(76)] {
            assert_eq!(validate("id", id), Ok(()), "{id}");
        }
    }

    #[test]
    fn refuses_traversal_and_odd_characters() {
        for id in [
            "..", "../etc", "a/b", "-a", "a-", "a..b", ".hidden", "a b", "a\0b", "é",
        ] {
            assert!(validate("id", id).is_err(), "{id:?} was accepted");
        }
    }

    #[test]
    fn refuses_empty_and_long_ids_with_clear_message() {
        assert_eq!(
            validate("container id", "").unwrap_err().to_string(),
            "container id must not be empty"
        );
        let msg = validate("container id", &"a".repeat(77))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("longer than 76"), "{msg}");
    }
}
