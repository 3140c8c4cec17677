//! Reader of CTranslate2's `model.bin` (binary format version 6), the format faster-whisper
//! models ship in.
//!
//! Layout (little-endian): `u32` version, the spec name (`u16` length including a NUL,
//! then the bytes), `u32` revision, `u32` variable count, then per variable its name,
//! `u8` rank, `rank` x `u32` dims, `u8` dtype, `u32` byte count and the raw bytes; then
//! `u32` alias count and (alias, target) name pairs.

use std::collections::HashMap;

use super::ModelError;

/// The only binary version this reader understands.
pub const SUPPORTED_VERSION: u32 = 6;

/// Element type of a stored variable (CTranslate2's `DataType` numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// 32-bit float.
    F32,
    /// 8-bit signed integer (scalars such as flags).
    I8,
    /// 16-bit signed integer (scalars such as head counts).
    I16,
    /// 32-bit signed integer.
    I32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

impl Dtype {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Dtype::F32,
            1 => Dtype::I8,
            2 => Dtype::I16,
            3 => Dtype::I32,
            4 => Dtype::F16,
            5 => Dtype::Bf16,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::I8 => 1,
            Dtype::I16 | Dtype::F16 | Dtype::Bf16 => 2,
            Dtype::F32 | Dtype::I32 => 4,
        }
    }
}

/// One named tensor of the file.
#[derive(Debug, Clone)]
pub struct Variable {
    /// Its shape (empty for a scalar).
    pub shape: Vec<usize>,
    /// Its element type.
    pub dtype: Dtype,
    /// Its raw little-endian bytes.
    pub bytes: Vec<u8>,
}

impl Variable {
    /// The value of an integer scalar (head counts, flags).
    pub fn scalar_int(&self) -> Option<i64> {
        let b = &self.bytes;
        Some(match (self.dtype, b.len()) {
            (Dtype::I8, 1) => b[0] as i8 as i64,
            (Dtype::I16, 2) => i16::from_le_bytes([b[0], b[1]]) as i64,
            (Dtype::I32, 4) => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
            _ => return None,
        })
    }
}

/// A parsed `model.bin`: its spec and its variables by name (aliases resolved).
#[derive(Debug)]
pub struct Ct2File {
    /// The model spec, e.g. `WhisperSpec`.
    pub spec: String,
    /// The spec revision.
    pub revision: u32,
    /// Variables by name.
    pub variables: HashMap<String, Variable>,
    /// Alias name to target name (e.g. a tied output projection).
    pub aliases: HashMap<String, String>,
}

impl Ct2File {
    /// Parses the whole file. Every structural problem is an error naming the byte
    /// offset and what was expected there.
    pub fn parse(bytes: &[u8]) -> Result<Self, ModelError> {
        let mut r = Reader { bytes, pos: 0 };
        let version = r.u32("binary version")?;
        if version != SUPPORTED_VERSION {
            return Err(ModelError::Format(format!(
                "binary version {version} is not supported (expected {SUPPORTED_VERSION}); \
                 is this a CTranslate2 model.bin?"
            )));
        }
        let spec = r.string("spec name")?;
        let revision = r.u32("spec revision")?;
        let count = r.u32("variable count")?;
        // Never trust a count for preallocation: a corrupt one must give an error, not
        // an allocation failure.
        let mut variables = HashMap::with_capacity((count as usize).min(1024));
        for _ in 0..count {
            let name = r.string("variable name")?;
            let rank = r.u8("rank")?;
            let shape = (0..rank)
                .map(|_| r.u32("dimension").map(|d| d as usize))
                .collect::<Result<Vec<_>, _>>()?;
            let code = r.u8("dtype")?;
            let dtype = Dtype::from_code(code).ok_or_else(|| {
                ModelError::Format(format!("variable {name}: unknown dtype code {code}"))
            })?;
            let len = r.u32("byte count")? as usize;
            let expected = shape
                .iter()
                .try_fold(dtype.size(), |n, &d| n.checked_mul(d));
            if expected != Some(len) {
                let expected =
                    expected.map_or("more than fits in memory".into(), |n| n.to_string());
                return Err(ModelError::Format(format!(
                    "variable {name}: {len} bytes stored, but shape {shape:?} of {dtype:?} needs {expected}"
                )));
            }
            let bytes = r.take(len, &format!("data of variable {name}"))?.to_vec();
            variables.insert(
                name,
                Variable {
                    shape,
                    dtype,
                    bytes,
                },
            );
        }
        let mut aliases = HashMap::new();
        for _ in 0..r.u32("alias count")? {
            let alias = r.string("alias name")?;
            let target = r.string("alias target")?;
            aliases.insert(alias, target);
        }
        if r.pos != bytes.len() {
            return Err(ModelError::Format(format!(
                "{} unexpected bytes after the last alias",
                bytes.len() - r.pos
            )));
        }
        Ok(Self {
            spec,
            revision,
            variables,
            aliases,
        })
    }

    /// The variable `name`, following an alias if needed.
    pub fn get(&self, name: &str) -> Result<&Variable, ModelError> {
        let target = self.aliases.get(name).map(String::as_str).unwrap_or(name);
        self.variables
            .get(target)
            .ok_or_else(|| ModelError::Format(format!("the model has no variable {name}")))
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ModelError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(ModelError::Truncated {
                offset: self.pos as u64,
                what: what.to_string(),
            });
        };
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn u8(&mut self, what: &str) -> Result<u8, ModelError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, ModelError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32, ModelError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A `u16`-length-prefixed, NUL-terminated UTF-8 string.
    fn string(&mut self, what: &str) -> Result<String, ModelError> {
        let at = self.pos;
        let len = self.u16(what)? as usize;
        let raw = self.take(len, what)?;
        let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
        String::from_utf8(raw.to_vec())
            .map_err(|_| ModelError::Format(format!("{what} at byte {at} is not UTF-8")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    fn tiny_file() -> Vec<u8> {
        tiny_file_claiming(8)
    }

    /// A two-variable file whose first variable claims `byte_count` bytes.
    fn tiny_file_claiming(byte_count: u32) -> Vec<u8> {
        let mut b = 6u32.to_le_bytes().to_vec();
        string(&mut b, "WhisperSpec");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&2u32.to_le_bytes());
        string(&mut b, "a/weight");
        b.push(2);
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&2u32.to_le_bytes());
        b.push(0);
        b.extend_from_slice(&byte_count.to_le_bytes());
        b.extend_from_slice(&1.5f32.to_le_bytes());
        b.extend_from_slice(&(-2f32).to_le_bytes());
        string(&mut b, "a/num_heads");
        b.push(0);
        b.push(2);
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&6i16.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        string(&mut b, "b/weight");
        string(&mut b, "a/weight");
        b
    }

    #[test]
    fn parses_variables_scalars_and_aliases() {
        let f = Ct2File::parse(&tiny_file()).unwrap();
        assert_eq!((f.spec.as_str(), f.revision), ("WhisperSpec", 3));
        let w = f.get("b/weight").unwrap();
        assert_eq!((w.shape.clone(), w.dtype), (vec![1, 2], Dtype::F32));
        assert_eq!(&w.bytes[..4], &1.5f32.to_le_bytes());
        assert_eq!(f.get("a/num_heads").unwrap().scalar_int(), Some(6));
        assert!(f.get("missing").is_err());
    }

    #[test]
    fn every_truncation_is_reported_with_its_offset() {
        let full = tiny_file();
        for cut in 0..full.len() {
            match Ct2File::parse(&full[..cut]) {
                Err(ModelError::Truncated { offset, .. }) => assert!(offset <= cut as u64),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn absurd_counts_and_shapes_are_errors_not_crashes() {
        let mut b = 6u32.to_le_bytes().to_vec();
        string(&mut b, "WhisperSpec");
        b.extend_from_slice(&3u32.to_le_bytes());
        let header = b.len();
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Ct2File::parse(&b),
            Err(ModelError::Truncated { .. })
        ));
        b.truncate(header);
        b.extend_from_slice(&1u32.to_le_bytes());
        string(&mut b, "huge");
        b.push(4);
        for _ in 0..4 {
            b.extend_from_slice(&u32::MAX.to_le_bytes());
        }
        b.push(0);
        b.extend_from_slice(&16u32.to_le_bytes());
        let e = Ct2File::parse(&b).unwrap_err().to_string();
        assert!(e.contains("huge") && e.contains("more than fits"), "{e}");
    }

    #[test]
    fn wrong_version_and_size_mismatch_are_named() {
        let mut bad = tiny_file();
        bad[0] = 5;
        let e = Ct2File::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("binary version 5"), "{e}");
        let e = Ct2File::parse(&tiny_file_claiming(12))
            .unwrap_err()
            .to_string();
        assert!(e.contains("a/weight") && e.contains("needs 8"), "{e}");
    }
}
