//! Helpers of the captions tests: speech made with espeak-ng, a real transcription
//! service over HTTP, and word error rate.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use idempipe_captions::{LocalTranscriber, Transcriber};

/// Renders `sentences` with espeak-ng into one WAV (a pause after each sentence).
pub fn espeak(sentences: &[&str], wav: &Path) {
    let out = std::process::Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-g", "12", "-w"])
        .arg(wav)
        .arg(sentences.join(" "))
        .output()
        .expect("espeak-ng runs (scripts/setup installs it)");
    assert!(
        out.status.success(),
        "espeak-ng: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub use idempipe_testkit::speech::wer;

/// The text of an SRT or WebVTT file, without numbers, times and header.
pub fn caption_text(file: &str) -> String {
    file.lines()
        .filter(|l| !l.contains("-->") && l.parse::<u32>().is_err() && *l != "WEBVTT")
        .collect::<Vec<_>>()
        .join(" ")
}

/// Decides the status a request fails with, from its idempotency key and how many
/// requests with that key came before; `None` serves it.
pub type Fail = Arc<dyn Fn(&str, usize) -> Option<StatusCode> + Send + Sync>;

/// A transcription service with the OpenAI-compatible API, backed by real Whisper.
#[derive(Clone)]
pub struct TranscriptionServer {
    pub url: String,
    /// Requests per idempotency key, failed ones included.
    pub calls: Arc<Mutex<HashMap<String, usize>>>,
}

#[derive(Clone)]
struct ServerState {
    model: LocalTranscriber,
    fail: Fail,
    calls: Arc<Mutex<HashMap<String, usize>>>,
}

/// Starts the service on 127.0.0.1:0 with the model in `model_dir`.
pub async fn start_transcription_server(model_dir: &Path, fail: Fail) -> TranscriptionServer {
    let model = LocalTranscriber::load(model_dir, Default::default()).unwrap();
    let calls = Arc::new(Mutex::new(HashMap::new()));
    let state = ServerState {
        model,
        fail,
        calls: calls.clone(),
    };
    let app = axum::Router::new()
        .route("/v1/audio/transcriptions", axum::routing::post(transcribe))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    TranscriptionServer { url, calls }
}

async fn transcribe(
    State(state): State<ServerState>,
    headers: HeaderMap,
    mut form: Multipart,
) -> (StatusCode, String) {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let before = {
        let mut calls = state.calls.lock().unwrap();
        let n = calls.entry(key.clone()).or_default();
        *n += 1;
        *n - 1
    };
    if let Some(status) = (state.fail)(&key, before) {
        return (
            status,
            r#"{"error":{"message":"injected by the test"}}"#.into(),
        );
    }
    let (mut wav, mut format) = (None, None);
    while let Some(field) = form.next_field().await.unwrap() {
        match field.name() {
            Some("file") => wav = Some(field.bytes().await.unwrap()),
            Some("response_format") => format = Some(field.text().await.unwrap()),
            _ => {}
        }
    }
    assert_eq!(format.as_deref(), Some("verbose_json"));
    let samples = idempipe_captions::audio::wav_samples(&wav.expect("a file field"))
        .expect("16 kHz mono WAV");
    let transcript = state.model.transcribe(samples, &key).await.unwrap();
    let body = serde_json::json!({ "text": "", "segments": transcript.segments });
    (StatusCode::OK, body.to_string())
}
