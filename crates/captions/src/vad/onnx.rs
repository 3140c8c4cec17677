//! Just enough of the ONNX format to read a model's weights: the float initializers of
//! its graph, from the protobuf wire format (no protobuf or ONNX dependency).
//!
//! `ModelProto.graph` is field 7; `GraphProto.initializer` field 5; in a `TensorProto`,
//! `dims` is field 1, `data_type` 2, `float_data` 4, `name` 8 and `raw_data` 9.

use std::collections::HashMap;

/// ONNX's code for 32-bit floats.
const FLOAT: u64 = 1;

/// One float initializer: its shape and values (row-major).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Initializer {
    /// Dimensions.
    pub dims: Vec<usize>,
    /// Values, as many as the dimensions' product.
    pub values: Vec<f32>,
}

/// A protobuf field's value.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// Reads protobuf fields one after the other.
struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .bytes
                .get(self.at)
                .ok_or_else(|| format!("a varint runs past the end at byte {}", self.at))?;
            self.at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(format!("a varint longer than 10 bytes at byte {}", self.at))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| format!("a field of {n} bytes runs past the end at byte {}", self.at))?;
        let piece = &self.bytes[self.at..end];
        self.at = end;
        Ok(piece)
    }

    /// The next field number and value, or None at the end.
    fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>, String> {
        if self.at >= self.bytes.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|e| e.to_string())?;
                Value::Bytes(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed
            }
            wire => return Err(format!("unsupported protobuf wire type {wire}")),
        };
        Ok(Some((key >> 3, value)))
    }
}

/// The float initializers of an ONNX model, by name. Initializers of other types
/// (shape constants) are left out.
pub(crate) fn float_initializers(model: &[u8]) -> Result<HashMap<String, Initializer>, String> {
    let mut graph = None;
    let mut fields = Fields::new(model);
    while let Some((number, value)) = fields.next_field()? {
        if let (7, Value::Bytes(b)) = (number, value) {
            graph = Some(b);
        }
    }
    let graph = graph.ok_or("not an ONNX model: no graph")?;
    let mut out = HashMap::new();
    let mut fields = Fields::new(graph);
    while let Some((number, value)) = fields.next_field()? {
        if let (5, Value::Bytes(tensor)) = (number, value)
            && let Some((name, init)) = tensor_of(tensor)?
        {
            out.insert(name, init);
        }
    }
    Ok(out)
}

/// One `TensorProto`: its name and values if it holds floats.
fn tensor_of(bytes: &[u8]) -> Result<Option<(String, Initializer)>, String> {
    let (mut dims, mut data_type, mut name, mut raw, mut floats) =
        (Vec::new(), 0, String::new(), None, Vec::new());
    let mut fields = Fields::new(bytes);
    while let Some((number, value)) = fields.next_field()? {
        match (number, value) {
            (1, Value::Varint(d)) => dims.push(d as usize),
            (1, Value::Bytes(packed)) => {
                let mut p = Fields::new(packed);
                while p.at < packed.len() {
                    dims.push(p.varint()? as usize);
                }
            }
            (2, Value::Varint(t)) => data_type = t,
            (4, Value::Bytes(packed)) => floats.extend(
                packed
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
            (8, Value::Bytes(n)) => name = String::from_utf8_lossy(n).into_owned(),
            (9, Value::Bytes(r)) => raw = Some(r),
            _ => {}
        }
    }
    if data_type != FLOAT {
        return Ok(None);
    }
    let values: Vec<f32> = match raw {
        Some(r) => r
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        None => floats,
    };
    let count: usize = dims.iter().product();
    if values.len() != count {
        return Err(format!(
            "initializer {name:?} has {} values for dimensions {dims:?}",
            values.len()
        ));
    }
    Ok(Some((name, Initializer { dims, values })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn bytes_field(number: u64, payload: &[u8], out: &mut Vec<u8>) {
        varint(number << 3 | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    /// A model with one float tensor (raw data, unpacked dims) and one int64 tensor.
    fn model() -> Vec<u8> {
        let mut tensor = Vec::new();
        for d in [2u64, 3] {
            varint(1 << 3, &mut tensor);
            varint(d, &mut tensor);
        }
        varint(2 << 3, &mut tensor);
        varint(FLOAT, &mut tensor);
        bytes_field(8, b"w", &mut tensor);
        let raw: Vec<u8> = (0..6)
            .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
            .collect();
        bytes_field(9, &raw, &mut tensor);
        let mut ints = Vec::new();
        bytes_field(1, &[1], &mut ints);
        varint(2 << 3, &mut ints);
        varint(7, &mut ints);
        bytes_field(8, b"shape", &mut ints);
        let mut graph = Vec::new();
        bytes_field(1, b"a node, skipped", &mut graph);
        bytes_field(5, &tensor, &mut graph);
        bytes_field(5, &ints, &mut graph);
        let mut model = Vec::new();
        varint(1 << 3, &mut model);
        varint(8, &mut model);
        bytes_field(7, &graph, &mut model);
        model
    }

    #[test]
    fn reads_float_initializers_and_skips_the_rest() {
        let inits = float_initializers(&model()).unwrap();
        assert_eq!(inits.len(), 1);
        assert_eq!(
            inits["w"],
            Initializer {
                dims: vec![2, 3],
                values: vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
            }
        );
    }

    #[test]
    fn a_truncated_model_is_refused_naming_where() {
        let m = model();
        let err = float_initializers(&m[..m.len() - 5]).unwrap_err();
        assert!(err.contains("runs past the end"), "{err}");
        assert!(float_initializers(b"").unwrap_err().contains("no graph"));
    }
}
