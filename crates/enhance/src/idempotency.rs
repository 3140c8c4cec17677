//! `Idempotency-Key` validation, shared by the server and the HTTP provider.

/// Longest accepted key, per the API contract.
pub const MAX_KEY_LEN: usize = 255;

/// A key that breaks the contract's rule: 1..=255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Idempotency-Key must be 1..={MAX_KEY_LEN} visible ASCII characters (0x21..=0x7e): {reason}"
)]
pub struct KeyError {
    /// What was wrong with it.
    pub reason: String,
}

/// Checks `key` against the contract: 1..=255 visible ASCII characters.
pub fn validate_key(key: &[u8]) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError {
            reason: "it is empty".into(),
        });
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KeyError {
            reason: format!("it is {} characters long", key.len()),
        });
    }
    if let Some(pos) = key.iter().position(|b| !b.is_ascii_graphic()) {
        return Err(KeyError {
            reason: format!("byte 0x{:02x} at position {pos}", key[pos]),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(validate_key(b"frame/000123").is_ok());
        assert!(validate_key(&[b'a'; 255]).is_ok());
        assert!(validate_key(&[b'a'; 256]).is_err());
        assert!(validate_key(b"").is_err());
        assert!(validate_key(b"has space").is_err());
        assert!(validate_key("é".as_bytes()).is_err());
    }
}
