//! Maps a CTranslate2 Whisper spec onto the tensor names of candle's Whisper (the
//! Hugging Face layout), and derives the model's dimensions from the tensors.
//!
//! CTranslate2 fuses projections: self-attention Q, K and V are one `linear_0` (split in
//! three), cross-attention K and V are one `linear_1` (split in two). Whisper's key
//! projections have no bias; the fused biases carry zeros there, which is checked.
//! Layer norms are `gamma`/`beta` instead of `weight`/`bias`.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{LayerNorm, Linear};
use candle_transformers::models::whisper::Config;

use super::ModelError;
use super::ct2::{Ct2File, Dtype, Variable};

/// The spec name this mapping expects.
const SPEC: &str = "WhisperSpec";

/// candle's tensors by Hugging Face name, and the dimensions read off them.
pub(crate) fn whisper_tensors(
    file: &Ct2File,
    suppress_tokens: Vec<u32>,
) -> Result<(Config, HashMap<String, Tensor>), ModelError> {
    if file.spec != SPEC {
        return Err(ModelError::Format(format!(
            "the model is a {}, not a {SPEC}",
            file.spec
        )));
    }
    let config = config(file, suppress_tokens)?;
    let mut m = Mapper {
        file,
        out: HashMap::new(),
    };
    m.copy("model.encoder.conv1", "encoder/conv1")?;
    m.copy("model.encoder.conv2", "encoder/conv2")?;
    m.norm("model.encoder.layer_norm", "encoder/layer_norm")?;
    for i in 0..config.encoder_layers {
        let (hf, ct) = (
            format!("model.encoder.layers.{i}"),
            format!("encoder/layer_{i}"),
        );
        m.self_attention(&hf, &ct, config.d_model)?;
        m.ffn(&hf, &ct)?;
    }
    m.tensor(
        "model.decoder.embed_tokens.weight",
        "decoder/embeddings/weight",
    )?;
    m.tensor(
        "model.decoder.embed_positions.weight",
        "decoder/position_encodings/encodings",
    )?;
    m.norm("model.decoder.layer_norm", "decoder/layer_norm")?;
    for i in 0..config.decoder_layers {
        let (hf, ct) = (
            format!("model.decoder.layers.{i}"),
            format!("decoder/layer_{i}"),
        );
        m.self_attention(&hf, &ct, config.d_model)?;
        m.cross_attention(&hf, &ct, config.d_model)?;
        m.ffn(&hf, &ct)?;
    }
    Ok((config, m.out))
}

fn config(file: &Ct2File, suppress_tokens: Vec<u32>) -> Result<Config, ModelError> {
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
    // candle's Whisper computes sinusoids over d_model / 2 - 1 and splits d_model into
    // heads: a d_model below 4, odd, or not a multiple of the head counts is no
    // Whisper (the smallest has 384) and would panic or fail deep inside candle.
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

struct Mapper<'a> {
    file: &'a Ct2File,
    out: HashMap<String, Tensor>,
}

impl Mapper<'_> {
    fn load(&self, name: &str) -> Result<Tensor, ModelError> {
        tensor(self.file, name)
    }

    fn tensor(&mut self, hf: &str, ct: &str) -> Result<(), ModelError> {
        let t = self.load(ct)?;
        self.out.insert(hf.to_string(), t);
        Ok(())
    }

    /// A linear or convolution layer: `weight` and `bias` under both names.
    fn copy(&mut self, hf: &str, ct: &str) -> Result<(), ModelError> {
        self.tensor(&format!("{hf}.weight"), &format!("{ct}/weight"))?;
        self.tensor(&format!("{hf}.bias"), &format!("{ct}/bias"))
    }

    fn norm(&mut self, hf: &str, ct: &str) -> Result<(), ModelError> {
        self.tensor(&format!("{hf}.weight"), &format!("{ct}/gamma"))?;
        self.tensor(&format!("{hf}.bias"), &format!("{ct}/beta"))
    }

    /// Splits a fused projection into `parts.len()` equal row blocks. A part named with
    /// a trailing `!` is a key projection: no bias, and the fused bias must be zero there.
    fn split(&mut self, hf: &str, parts: &[&str], ct: &str, n: usize) -> Result<(), ModelError> {
        let weight = self.load(&format!("{ct}/weight"))?;
        let bias = self.load(&format!("{ct}/bias"))?;
        if weight.dims() != [parts.len() * n, n] || bias.dims() != [parts.len() * n] {
            return Err(ModelError::Format(format!(
                "{ct} has shape {:?}, expected [{}, {n}]",
                weight.dims(),
                parts.len() * n
            )));
        }
        for (i, part) in parts.iter().enumerate() {
            let w = weight.narrow(0, i * n, n)?;
            let b = bias.narrow(0, i * n, n)?;
            match part.strip_suffix('!') {
                Some(key) => {
                    let largest = b.abs()?.max(0)?.to_scalar::<f32>()?;
                    if largest != 0.0 {
                        return Err(ModelError::Format(format!(
                            "{ct}: the key projection has a non-zero bias ({largest}), which Whisper does not have"
                        )));
                    }
                    self.out.insert(format!("{hf}.{key}.weight"), w);
                }
                None => {
                    self.out.insert(format!("{hf}.{part}.weight"), w);
                    self.out.insert(format!("{hf}.{part}.bias"), b);
                }
            }
        }
        Ok(())
    }

    fn self_attention(&mut self, hf: &str, ct: &str, n: usize) -> Result<(), ModelError> {
        let (hf_attn, ct_attn) = (format!("{hf}.self_attn"), format!("{ct}/self_attention"));
        self.split(
            &hf_attn,
            &["q_proj", "k_proj!", "v_proj"],
            &format!("{ct_attn}/linear_0"),
            n,
        )?;
        self.copy(
            &format!("{hf_attn}.out_proj"),
            &format!("{ct_attn}/linear_1"),
        )?;
        self.norm(
            &format!("{hf}.self_attn_layer_norm"),
            &format!("{ct_attn}/layer_norm"),
        )
    }

    fn cross_attention(&mut self, hf: &str, ct: &str, n: usize) -> Result<(), ModelError> {
        let (hf_attn, ct_attn) = (format!("{hf}.encoder_attn"), format!("{ct}/attention"));
        self.copy(&format!("{hf_attn}.q_proj"), &format!("{ct_attn}/linear_0"))?;
        self.split(
            &hf_attn,
            &["k_proj!", "v_proj"],
            &format!("{ct_attn}/linear_1"),
            n,
        )?;
        self.copy(
            &format!("{hf_attn}.out_proj"),
            &format!("{ct_attn}/linear_2"),
        )?;
        self.norm(
            &format!("{hf}.encoder_attn_layer_norm"),
            &format!("{ct_attn}/layer_norm"),
        )
    }

    fn ffn(&mut self, hf: &str, ct: &str) -> Result<(), ModelError> {
        self.copy(&format!("{hf}.fc1"), &format!("{ct}/ffn/linear_0"))?;
        self.copy(&format!("{hf}.fc2"), &format!("{ct}/ffn/linear_1"))?;
        self.norm(
            &format!("{hf}.final_layer_norm"),
            &format!("{ct}/ffn/layer_norm"),
        )
    }
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
