//! Reads a CTranslate2 Whisper spec's tensors (widening float16 and bfloat16,
//! dequantizing int8) as linear layers and layer norms, and derives the model's
//! dimensions from them. The encoder and decoder keep CTranslate2's fused projections
//! (self-attention Q, K and V in one `linear_0`; cross-attention K and V in one
//! `linear_1`); layer norms are `gamma`/`beta`.

use candle_core::{DType, Device, Tensor};
use candle_nn::{LayerNorm, Linear};
use candle_transformers::models::whisper::Config;

use super::ModelError;
use super::ct2::{Ct2File, Dtype, Variable};

/// The spec name this mapping expects.
const SPEC: &str = "WhisperSpec";

/// The model's dimensions, read off its tensors.
pub(crate) fn config(file: &Ct2File, suppress_tokens: Vec<u32>) -> Result<Config, ModelError> {
    if file.spec != SPEC {
        return Err(ModelError::Format(format!(
            "the model is a {}, not a {SPEC}",
            file.spec
        )));
    }
    let shape = |name: &str, rank: usize| -> Result<Vec<usize>, ModelError> {
        let v = file.get(name)?;
        if v.shape.len() != rank {
            return Err(ModelError::Format(format!(
                "{name} has shape {:?}, expected rank {rank}",
                v.shape
            )));
        }
        Ok(v.shape.clone())
    };
    let heads = |name: &str| -> Result<usize, ModelError> {
        let n = file.get(name)?.scalar_int().filter(|&n| n > 0);
        n.map(|n| n as usize)
            .ok_or_else(|| ModelError::Format(format!("{name} is not a positive integer")))
    };
    let layers = |prefix: &str| {
        (0..)
            .take_while(|i| {
                file.variables
                    .contains_key(&format!("{prefix}/layer_{i}/ffn/linear_0/weight"))
            })
            .count()
    };
    let conv1 = shape("encoder/conv1/weight", 3)?;
    let config = Config {
        num_mel_bins: conv1[1],
        max_source_positions: shape("encoder/position_encodings/encodings", 2)?[0],
        d_model: conv1[0],
        encoder_attention_heads: heads("encoder/num_heads")?,
        encoder_layers: layers("encoder"),
        vocab_size: shape("decoder/embeddings/weight", 2)?[0],
        max_target_positions: shape("decoder/position_encodings/encodings", 2)?[0],
        decoder_attention_heads: heads("decoder/num_heads")?,
        decoder_layers: layers("decoder"),
        suppress_tokens,
    };
    // The attention splits d_model into heads: a d_model below 4, odd, or not a
    // multiple of the head counts is no Whisper (the smallest has 384).
    let splits = |heads: usize| config.d_model.is_multiple_of(heads);
    if config.d_model < 4
        || !config.d_model.is_multiple_of(2)
        || !splits(config.encoder_attention_heads)
        || !splits(config.decoder_attention_heads)
    {
        return Err(ModelError::Format(format!(
            "d_model {} (from encoder/conv1/weight) must be even, at least 4 and a multiple \
             of the head counts ({} encoder, {} decoder)",
            config.d_model, config.encoder_attention_heads, config.decoder_attention_heads
        )));
    }
    if config.encoder_layers == 0 || config.decoder_layers == 0 {
        return Err(ModelError::Format(
            "the model has no encoder or decoder layers".into(),
        ));
    }
    Ok(config)
}

/// The variable `name` as an f32 tensor on the CPU. Float16 and bfloat16 are widened;
/// int8 (CTranslate2's quantized models) is dequantized with the per-row scales stored
/// beside it as `{name}_scale` (CTranslate2 stores `round(w * scale)`).
pub(crate) fn tensor(file: &Ct2File, name: &str) -> Result<Tensor, ModelError> {
    let v = file.get(name)?;
    let dtype = match v.dtype {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::Bf16 => DType::BF16,
        Dtype::I8 if !v.shape.is_empty() => return dequantize(file, name, v),
        other => {
            return Err(ModelError::Format(format!(
                "{name} is stored as {other:?}, which is not a weight type"
            )));
        }
    };
    let t = Tensor::from_raw_buffer(&v.bytes, dtype, &v.shape, &Device::Cpu)?;
    Ok(t.to_dtype(DType::F32)?)
}

/// An int8 variable divided, row by row, by its `{name}_scale`.
fn dequantize(file: &Ct2File, name: &str, v: &Variable) -> Result<Tensor, ModelError> {
    let scale_name = format!("{name}_scale");
    if file.get(&scale_name).is_err() {
        return Err(ModelError::Format(format!(
            "{name} is int8 but the model has no {scale_name} to dequantize it with"
        )));
    }
    let scale = tensor(file, &scale_name)?;
    let rows = v.shape[0];
    if scale.dims() != [rows] {
        return Err(ModelError::Format(format!(
            "{scale_name} has shape {:?}, expected [{rows}] (one scale per row of {name})",
            scale.dims()
        )));
    }
    let values: Vec<f32> = v.bytes.iter().map(|&b| b as i8 as f32).collect();
    let q = Tensor::from_vec(values, v.shape.as_slice(), &Device::Cpu)?;
    let mut scale_shape = vec![1; v.shape.len()];
    scale_shape[0] = rows;
    Ok(q.broadcast_div(&scale.reshape(scale_shape)?)?)
}

/// The linear layer at `prefix` (`weight`, and `bias` when stored).
pub(crate) fn linear(file: &Ct2File, prefix: &str) -> Result<Linear, ModelError> {
    let weight = tensor(file, &format!("{prefix}/weight"))?;
    let bias_name = format!("{prefix}/bias");
    let bias = if file.get(&bias_name).is_ok() {
        Some(tensor(file, &bias_name)?)
    } else {
        None
    };
    Ok(Linear::new(weight, bias))
}

/// The layer norm at `prefix` (`gamma` and `beta`, epsilon 1e-5 as in Whisper).
pub(crate) fn layer_norm(file: &Ct2File, prefix: &str) -> Result<LayerNorm, ModelError> {
    Ok(LayerNorm::new(
        tensor(file, &format!("{prefix}/gamma"))?,
        tensor(file, &format!("{prefix}/beta"))?,
        1e-5,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn var(shape: &[usize], dtype: Dtype, bytes: Vec<u8>) -> Variable {
        Variable {
            shape: shape.to_vec(),
            dtype,
            bytes,
        }
    }

    fn file(vars: Vec<(&str, Variable)>) -> Ct2File {
        Ct2File {
            spec: SPEC.into(),
            revision: 3,
            variables: vars.into_iter().map(|(n, v)| (n.to_string(), v)).collect(),
            aliases: HashMap::new(),
        }
    }

    #[test]
    fn int8_weights_are_divided_by_their_row_scales() {
        // CTranslate2 stores round(w * scale) with scale = 127 / max|row|.
        let q: Vec<u8> = [127i8, -64, 10, -127].iter().map(|&v| v as u8).collect();
        let scales: Vec<u8> = [127.0f32 / 2.0, 127.0 / 0.5]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let f = file(vec![
            ("x/weight", var(&[2, 2], Dtype::I8, q)),
            ("x/weight_scale", var(&[2], Dtype::F32, scales)),
        ]);
        let w = tensor(&f, "x/weight").unwrap().to_vec2::<f32>().unwrap();
        let expect = [[2.0, -64.0 * 2.0 / 127.0], [10.0 * 0.5 / 127.0, -0.5]];
        for (row, want) in w.iter().zip(expect) {
            for (a, b) in row.iter().zip(want) {
                assert!((a - b).abs() < 1e-6, "{w:?}");
            }
        }
        let missing = file(vec![("y/weight", var(&[1, 1], Dtype::I8, vec![1]))]);
        let e = tensor(&missing, "y/weight").unwrap_err().to_string();
        assert!(e.contains("y/weight_scale"), "{e}");
    }
}
