//! Whisper's vocabulary: token ids to text (byte-level BPE, as in GPT-2), and the
//! special tokens decoding needs.

use super::ModelError;

/// Ids of the special tokens, looked up by their text in the vocabulary.
#[derive(Debug, Clone, Copy)]
pub struct SpecialTokens {
    /// `<|endoftext|>`: the end of a transcript; ids below it are text.
    pub eot: u32,
    /// `<|startoftranscript|>`.
    pub sot: u32,
    /// `<|startofprev|>`: precedes the previous window's text given as a prompt.
    pub sot_prev: u32,
    /// `<|nocaptions|>` (or `<|nospeech|>`): its probability says there is no speech.
    pub no_speech: u32,
    /// `<|notimestamps|>`.
    pub no_timestamps: u32,
    /// `<|transcribe|>` (multilingual models).
    pub transcribe: Option<u32>,
    /// `<|0.00|>`: the first timestamp token; `id - timestamp_begin` counts 20 ms steps.
    pub timestamp_begin: u32,
}

/// Token texts in byte-level form, by id.
#[derive(Debug, Clone)]
pub struct Vocabulary {
    tokens: Vec<String>,
    /// The special tokens.
    pub special: SpecialTokens,
}

impl Vocabulary {
    /// Parses `vocabulary.txt`: one token per line, the line number is the id.
    pub fn parse(text: &str) -> Result<Self, ModelError> {
        let tokens: Vec<String> = text.lines().map(str::to_owned).collect();
        let find = |name: &str| tokens.iter().position(|t| t == name).map(|i| i as u32);
        let need = |name: &str| {
            find(name).ok_or_else(|| {
                ModelError::Format(format!(
                    "the vocabulary has no {name} token; not a Whisper vocabulary"
                ))
            })
        };
        let special = SpecialTokens {
            eot: need("<|endoftext|>")?,
            sot: need("<|startoftranscript|>")?,
            sot_prev: need("<|startofprev|>")?,
            no_speech: find("<|nospeech|>")
                .or_else(|| find("<|nocaptions|>"))
                .ok_or_else(|| {
                    ModelError::Format("the vocabulary has no no-speech token".into())
                })?,
            no_timestamps: need("<|notimestamps|>")?,
            transcribe: find("<|transcribe|>"),
            timestamp_begin: need("<|0.00|>")?,
        };
        Ok(Self { tokens, special })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the vocabulary is empty (never true for a parsed one).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The id of a token given by its exact text, e.g. `<|en|>`.
    pub fn id(&self, token: &str) -> Option<u32> {
        self.tokens
            .iter()
            .position(|t| t == token)
            .map(|i| i as u32)
    }

    /// The text of token `id` as the vocabulary spells it (`<|de|>`, `Ġthe`).
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The bytes a text token stands for (empty for special and timestamp tokens).
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        match self.tokens.get(id as usize) {
            Some(token) if id < self.special.eot => {
                token.chars().filter_map(unicode_to_byte).collect()
            }
            _ => Vec::new(),
        }
    }

    /// The UTF-8 text of `ids`, skipping special and timestamp tokens. Bytes of a
    /// character split across tokens are joined before decoding.
    pub fn text(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend(self.token_bytes(id));
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Inverse of GPT-2's `bytes_to_unicode`: printable Latin-1 bytes stand for themselves,
/// the other 68 bytes were shifted to U+0100..U+0143 in byte order.
fn unicode_to_byte(c: char) -> Option<u8> {
    let printable = |b: u32| {
        (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
    };
    let code = c as u32;
    if code < 0x100 {
        return printable(code).then_some(code as u8);
    }
    let shifted = code.checked_sub(0x100)?;
    (0u32..256)
        .filter(|&b| !printable(b))
        .nth(shifted as usize)
        .map(|b| b as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_decoding_covers_every_byte_once() {
        let mut seen = std::collections::HashSet::new();
        for c in (0x21u32..0x144).filter_map(char::from_u32) {
            if let Some(b) = unicode_to_byte(c) {
                assert!(seen.insert(b), "byte {b} twice");
            }
        }
        assert_eq!(seen.len(), 256);
        assert_eq!(unicode_to_byte('Ġ'), Some(b' '));
        assert_eq!(unicode_to_byte('Ċ'), Some(b'\n'));
    }

    #[test]
    fn text_skips_special_tokens_and_joins_split_characters() {
        let mut lines: Vec<String> = vec![
            "ĠHello".into(),
            ",".into(),
            "Ġw".into(),
            "Ã".into(),
            "©".into(),
        ];
        for special in [
            "<|endoftext|>",
            "<|startoftranscript|>",
            "<|startofprev|>",
            "<|nocaptions|>",
            "<|notimestamps|>",
            "<|0.00|>",
        ] {
            lines.push(special.into());
        }
        let vocab = Vocabulary::parse(&lines.join("\n")).unwrap();
        assert_eq!(vocab.special.eot, 5);
        assert_eq!(vocab.special.timestamp_begin, 10);
        assert_eq!(vocab.text(&[6, 0, 1, 2, 3, 4, 10, 5]), " Hello, wé");
        let e = Vocabulary::parse("a\nb").unwrap_err().to_string();
        assert!(e.contains("<|endoftext|>"), "{e}");
    }
}
