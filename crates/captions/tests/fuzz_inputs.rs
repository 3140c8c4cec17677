//! Property tests of what captions read from outside: the CTranslate2 model files
//! (`model.bin`, `vocabulary.txt`, `config.json`) and a transcription service's answers,
//! and the caption files made from them.
//!
//! Model files are generated whole (a structurally valid Whisper of random tiny
//! dimensions, then damaged: a shape changed, bytes flipped, the file cut): loading
//! never panics, and every error names the file at fault. A scripted service answers
//! anything: the transcriber never panics or hangs, and its errors name the URL.

use std::path::Path;
use std::time::Duration;

use idempipe_captions::model::Vocabulary;
use idempipe_captions::model::ct2::Ct2File;
use idempipe_captions::{
    HttpTranscriber, Segment, Transcriber, WhisperModel, cues_from, to_srt, to_vtt,
};
use idempipe_testkit::TempDir;
use idempipe_testkit::scripted::{Answer, ScriptedServer};
use proptest::prelude::*;

/// One variable of a model file: name, shape and CTranslate2 dtype code.
struct Var {
    name: String,
    shape: Vec<u32>,
    dtype: u8,
}

impl Var {
    fn f32(name: impl Into<String>, shape: &[u32]) -> Self {
        Self {
            name: name.into(),
            shape: shape.to_vec(),
            dtype: 0,
        }
    }

    /// An `i32` scalar (its value is written by [`model_bin`]).
    fn heads(name: &str) -> Self {
        Self {
            name: name.into(),
            shape: vec![],
            dtype: 3,
        }
    }

    fn elem_size(&self) -> usize {
        match self.dtype {
            1 => 1,
            2 | 4 | 5 => 2,
            _ => 4,
        }
    }
}

/// Dimensions of a generated Whisper.
#[derive(Debug, Clone)]
struct Dims {
    d_model: u32,
    mels: u32,
    heads: u32,
    source_positions: u32,
    target_positions: u32,
    ffn: u32,
    layers: u32,
    vocab: u32,
}

/// The variables of a Whisper of `dims`, in CTranslate2's names.
fn whisper_vars(d: &Dims) -> Vec<Var> {
    let n = d.d_model;
    let mut vars = vec![
        Var::f32("encoder/conv1/weight", &[n, d.mels, 3]),
        Var::f32("encoder/conv1/bias", &[n]),
        Var::f32("encoder/conv2/weight", &[n, n, 3]),
        Var::f32("encoder/conv2/bias", &[n]),
        Var::f32(
            "encoder/position_encodings/encodings",
            &[d.source_positions, n],
        ),
        Var::f32("decoder/embeddings/weight", &[d.vocab, n]),
        Var::f32(
            "decoder/position_encodings/encodings",
            &[d.target_positions, n],
        ),
        Var::heads("encoder/num_heads"),
        Var::heads("decoder/num_heads"),
    ];
    let norm = |vars: &mut Vec<Var>, at: &str| {
        vars.push(Var::f32(format!("{at}/gamma"), &[n]));
        vars.push(Var::f32(format!("{at}/beta"), &[n]));
    };
    let linear = |vars: &mut Vec<Var>, at: &str, out: u32, inp: u32| {
        vars.push(Var::f32(format!("{at}/weight"), &[out, inp]));
        vars.push(Var::f32(format!("{at}/bias"), &[out]));
    };
    norm(&mut vars, "encoder/layer_norm");
    norm(&mut vars, "decoder/layer_norm");
    for side in ["encoder", "decoder"] {
        for i in 0..d.layers {
            let l = format!("{side}/layer_{i}");
            linear(&mut vars, &format!("{l}/self_attention/linear_0"), 3 * n, n);
            linear(&mut vars, &format!("{l}/self_attention/linear_1"), n, n);
            norm(&mut vars, &format!("{l}/self_attention/layer_norm"));
            linear(&mut vars, &format!("{l}/ffn/linear_0"), d.ffn, n);
            linear(&mut vars, &format!("{l}/ffn/linear_1"), n, d.ffn);
            norm(&mut vars, &format!("{l}/ffn/layer_norm"));
            if side == "decoder" {
                linear(&mut vars, &format!("{l}/attention/linear_0"), n, n);
                linear(&mut vars, &format!("{l}/attention/linear_1"), 2 * n, n);
                linear(&mut vars, &format!("{l}/attention/linear_2"), n, n);
                norm(&mut vars, &format!("{l}/attention/layer_norm"));
            }
        }
    }
    vars
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

/// `model.bin` bytes holding `vars` (floats zero, head counts `heads`).
fn model_bin(vars: &[Var], heads: u32) -> Vec<u8> {
    let mut b = 6u32.to_le_bytes().to_vec();
    string(&mut b, "WhisperSpec");
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&(vars.len() as u32).to_le_bytes());
    for v in vars {
        string(&mut b, &v.name);
        b.push(v.shape.len() as u8);
        for d in &v.shape {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.push(v.dtype);
        let count: usize = v.shape.iter().map(|&d| d as usize).product();
        let len = count * v.elem_size();
        b.extend_from_slice(&(len as u32).to_le_bytes());
        if v.shape.is_empty() {
            b.extend_from_slice(&(heads as i32).to_le_bytes()[..len]);
        } else {
            b.resize(b.len() + len, 0);
        }
    }
    b.extend_from_slice(&0u32.to_le_bytes());
    b
}

/// A vocabulary of `size` tokens (the special ones Whisper needs, then filler).
fn vocabulary(size: u32) -> String {
    let special = [
        "<|endoftext|>",
        "<|startoftranscript|>",
        "<|startofprev|>",
        "<|nocaptions|>",
        "<|notimestamps|>",
        "<|0.00|>",
    ];
    let mut lines: Vec<String> = special.iter().map(|s| s.to_string()).collect();
    lines.extend((lines.len() as u32..size).map(|i| format!("t{i}")));
    lines.truncate(size as usize);
    lines.join("\n")
}

fn dims() -> impl Strategy<Value = Dims> {
    (
        0u32..=8,
        1u32..=4,
        0u32..=4,
        1u32..=6,
        1u32..=6,
        1u32..=6,
        0u32..=2,
        4u32..=10,
    )
        .prop_map(
            |(d_model, mels, heads, source_positions, target_positions, ffn, layers, vocab)| Dims {
                d_model,
                mels,
                heads,
                source_positions,
                target_positions,
                ffn,
                layers,
                vocab,
            },
        )
}

/// How a generated model directory is damaged.
#[derive(Debug, Clone)]
enum Damage {
    None,
    /// One variable gets another shape (its data resized to match).
    Reshape(prop::sample::Index, Vec<u32>),
    /// Bytes of `model.bin` overwritten.
    Flip(Vec<(prop::sample::Index, u8)>),
    /// `model.bin` cut short.
    Cut(prop::sample::Index),
    /// `config.json` replaced.
    Config(String),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        1 => Just(Damage::None),
        3 => (any::<prop::sample::Index>(), prop::collection::vec(0u32..=9, 0..4))
            .prop_map(|(i, s)| Damage::Reshape(i, s)),
        2 => prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)
            .prop_map(Damage::Flip),
        1 => any::<prop::sample::Index>().prop_map(Damage::Cut),
        1 => prop_oneof![
            any::<String>(),
            Just(r#"{"suppress_ids": [-1]}"#.to_string()),
            Just(r#"{"suppress_ids": "x", "suppress_ids_begin": [1e99]}"#.to_string()),
        ]
        .prop_map(Damage::Config),
    ]
}

/// Writes a model directory for `dims` damaged by `damage`.
fn write_model(dir: &Path, dims: &Dims, damage: &Damage) {
    let mut vars = whisper_vars(dims);
    let mut config = r#"{"suppress_ids": [1, 2], "suppress_ids_begin": [0]}"#.to_string();
    if let Damage::Reshape(at, shape) = damage {
        let i = at.index(vars.len());
        vars[i].shape = shape.clone();
    }
    let mut bin = model_bin(&vars, dims.heads);
    match damage {
        Damage::Flip(edits) => {
            for (at, value) in edits {
                let i = at.index(bin.len());
                bin[i] = *value;
            }
        }
        Damage::Cut(at) => bin.truncate(at.index(bin.len())),
        Damage::Config(text) => config = text.clone(),
        Damage::None | Damage::Reshape(..) => {}
    }
    std::fs::write(dir.join("model.bin"), bin).unwrap();
    std::fs::write(dir.join("config.json"), config).unwrap();
    std::fs::write(dir.join("vocabulary.txt"), vocabulary(dims.vocab)).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn any_model_directory_loads_or_names_the_file_at_fault(dims in dims(), damage in damage()) {
        let dir = TempDir::new("fuzz-model");
        write_model(dir.path(), &dims, &damage);
        if let Err(e) = WhisperModel::load(dir.path()) {
            let message = e.to_string();
            prop_assert!(
                message.contains(&dir.path().display().to_string()),
                "{dims:?} {damage:?}: {message}"
            );
        }
    }

    #[test]
    fn model_bin_parsing_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut file = 6u32.to_le_bytes().to_vec();
        file.extend_from_slice(&bytes);
        for candidate in [&bytes[..], &file[..]] {
            if let Err(e) = Ct2File::parse(candidate) {
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }

    #[test]
    fn vocabulary_parsing_never_panics(text in any::<String>(), special in any::<bool>()) {
        let text = if special { format!("{}\n{text}", vocabulary(6)) } else { text };
        let _ = Vocabulary::parse(&text);
    }
}

/// Answers of a transcription service: JSON of every shape, random bytes, statuses.
fn service_answer() -> impl Strategy<Value = Answer> {
    let number = prop_oneof![
        any::<f64>().prop_map(|v| serde_json::json!(v)),
        (-5.0f64..40.0).prop_map(|v| serde_json::json!(v)),
        Just(serde_json::json!("1.0")),
        Just(serde_json::Value::Null),
    ];
    let segment = (number.clone(), number, any::<String>()).prop_map(
        |(start, end, text)| serde_json::json!({ "start": start, "end": end, "text": text }),
    );
    let json_body = prop::collection::vec(segment, 0..12).prop_map(|segments| {
        serde_json::json!({ "segments": segments })
            .to_string()
            .into_bytes()
    });
    let body = prop_oneof![
        3 => json_body,
        1 => prop::collection::vec(any::<u8>(), 0..300),
        1 => (0usize..6_000_000).prop_map(|n| vec![b' '; n]),
    ];
    let status = prop_oneof![4 => Just(200u16), 1 => 200u16..=599];
    (status, body).prop_map(|(status, body)| Answer {
        status,
        headers: vec![],
        body,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 120, ..ProptestConfig::default() })]

    #[test]
    fn any_service_answer_is_checked_without_harm(answer in service_answer()) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let status = answer.status;
        let secs = 2.0;
        let result = rt.block_on(async {
            let server = ScriptedServer::start().await;
            server.set(answer);
            let transcriber =
                HttpTranscriber::new(&server.url, "whisper-1", None, Duration::from_secs(10)).unwrap();
            let call = transcriber.transcribe(vec![0.0; 32_000], "fuzz/window/0");
            tokio::time::timeout(Duration::from_secs(30), call).await.expect("the transcriber hung")
        });
        match result {
            Ok(transcript) => {
                prop_assert_eq!(status, 200);
                let mut previous = 0.0;
                for s in &transcript.segments {
                    prop_assert!(s.start.is_finite() && s.end.is_finite());
                    prop_assert!(s.start >= previous && s.end >= s.start && s.end <= secs);
                    previous = s.start;
                }
            }
            Err(e) => {
                prop_assert!(e.message().contains("/v1/audio/transcriptions"), "{}", e.message());
                prop_assert!(e.message().len() < 2000, "message of {} bytes", e.message().len());
            }
        }
    }

    #[test]
    fn caption_files_keep_their_structure(
        windows in prop::collection::vec(
            (0.0f64..100.0, prop::collection::vec((0.0f64..40.0, 0.0f64..40.0, any::<String>()), 0..5)),
            0..5,
        )
    ) {
        let windows: Vec<(f64, Vec<Segment>)> = windows
            .into_iter()
            .map(|(offset, segs)| {
                let segs = segs
                    .into_iter()
                    .map(|(a, b, text)| Segment { start: a.min(b), end: a.max(b), text, words: Vec::new() })
                    .collect();
                (offset, segs)
            })
            .collect();
        let cues = cues_from(&windows);
        for pair in cues.windows(2) {
            prop_assert!(pair[0].end <= pair[1].start + 1e-9);
        }
        let vtt = to_vtt(&cues);
        prop_assert!(vtt.starts_with("WEBVTT\n"));
        // Each cue is a blank line, a timing line and text lines that are not blank and
        // cannot end the cue or forge a timing.
        for block in vtt.split("\n\n").skip(1) {
            let mut lines = block.lines();
            prop_assert!(lines.next().is_some_and(|l| l.contains(" --> ")));
            for line in lines {
                prop_assert!(!line.trim().is_empty() && !line.contains("-->"), "{line:?}");
            }
        }
        let srt = to_srt(&cues);
        prop_assert_eq!(srt.matches(" --> ").count(), cues.len());
    }
}
