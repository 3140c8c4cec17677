//! A transcription service with the OpenAI-compatible API:
//! `POST {base}/v1/audio/transcriptions`, multipart fields `file` (a WAV), `model`,
//! `response_format=verbose_json` (and `language`), answering
//! `{"segments": [{"start": s, "end": s, "text": "..."}, ...]}`.
//!
//! A 200 whose body is not such a document, or whose segments are out of order or
//! outside the audio, is retryable (a flaky proxy or backend); the engine's attempt
//! limit bounds how often.

use std::time::Duration;

use async_trait::async_trait;
use idempipe_enhance::provider::ProviderConfigError;
use idempipe_enhance::provider::http_common::{
    client, endpoint, garbled, ok_body, transport_error,
};
use reqwest::multipart::{Form, Part};
use reqwest::{Client, Url};
use serde::Deserialize;

use super::{ProviderError, Transcriber};
use crate::audio::wav_bytes;
use crate::transcribe::{Segment, Transcript};
use crate::windows::SAMPLE_RATE;

/// A segment may end this far past the audio sent (services round up).
const END_SLACK_SECS: f64 = 1.0;

/// Largest answer read: a 30 s window's `verbose_json` (with per-token detail) is a
/// few tens of KiB; anything far larger is not a transcript of it.
const MAX_ANSWER_BYTES: usize = 4 << 20;

/// Calls a transcription service over HTTP.
#[derive(Debug, Clone)]
pub struct HttpTranscriber {
    client: Client,
    endpoint: Url,
    model: String,
    language: Option<String>,
    timeout: Duration,
    name: String,
}

#[derive(Deserialize)]
struct VerboseJson {
    segments: Vec<WireSegment>,
}

#[derive(Deserialize)]
struct WireSegment {
    start: f64,
    end: f64,
    text: String,
}

impl HttpTranscriber {
    /// Validates `base_url` and builds the client. `model` is sent as the `model` field
    /// (e.g. `whisper-1`); `language`, when given, as the `language` field.
    pub fn new(
        base_url: &str,
        model: &str,
        language: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, ProviderConfigError> {
        let (endpoint, name) = Self::endpoint_of(base_url)?;
        let client = client(timeout, Duration::from_secs(5))?;
        Ok(Self {
            client,
            endpoint,
            model: model.to_string(),
            language: language.map(str::to_string),
            timeout,
            name,
        })
    }

    /// Validates `base_url` and returns the transcription endpoint under it and a short
    /// name for logs, without building a client.
    pub fn endpoint_of(base_url: &str) -> Result<(Url, String), ProviderConfigError> {
        endpoint(base_url, "v1/audio/transcriptions")
    }

    /// The full URL requests go to.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }
}

#[async_trait]
impl Transcriber for HttpTranscriber {
    async fn transcribe(
        &self,
        samples: Vec<f32>,
        idempotency_key: &str,
    ) -> Result<Transcript, ProviderError> {
        let secs = samples.len() as f64 / SAMPLE_RATE as f64;
        let url = self.endpoint.as_str();
        let file = Part::bytes(wav_bytes(&samples))
            .file_name("audio.wav")
            .mime_str("audio/wav")
            .expect("a valid mime type");
        let mut form = Form::new()
            .part("file", file)
            .text("model", self.model.clone())
            .text("response_format", "verbose_json");
        if let Some(language) = &self.language {
            form = form.text("language", language.clone());
        }
        let response = self
            .client
            .post(self.endpoint.clone())
            .header("Idempotency-Key", idempotency_key)
            .multipart(form)
            .send()
            .await
            .map_err(|e| transport_error(url, self.timeout, &e))?;
        let (_, body) = ok_body(response, url, self.timeout, MAX_ANSWER_BYTES).await?;
        let segments = parse_answer(&body, secs).map_err(|what| garbled(url, &what))?;
        Ok(Transcript {
            segments,
            passes: 1,
            ..Transcript::default()
        })
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// The segments of a `verbose_json` answer for `secs` of audio, checked.
fn parse_answer(body: &[u8], secs: f64) -> Result<Vec<Segment>, String> {
    let answer: VerboseJson = serde_json::from_slice(body).map_err(|e| {
        let excerpt: String = String::from_utf8_lossy(body).chars().take(120).collect();
        format!("a body that is not a verbose_json transcription ({e}): {excerpt:?}")
    })?;
    let mut previous_start = 0.0;
    answer
        .segments
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let ordered = s.start.is_finite()
                && s.end.is_finite()
                && s.start >= previous_start
                && s.end >= s.start
                && s.end <= secs + END_SLACK_SECS;
            if !ordered {
                return Err(format!(
                    "segment {i} timed {}..{} s, which is not inside the {secs:.2} s of audio sent or not in order",
                    s.start, s.end
                ));
            }
            previous_start = s.start;
            Ok(Segment {
                start: s.start,
                end: s.end.min(secs),
                text: s.text.trim().to_string(),
                words: Vec::new(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_checked() {
        let ok = br#"{"text":"a b","segments":[{"id":0,"start":0.0,"end":1.2,"text":" a"},{"id":1,"start":1.2,"end":2.6,"text":" b"}]}"#;
        let segs = parse_answer(ok, 2.5).unwrap();
        assert_eq!(segs.len(), 2);
        assert_eq!((segs[1].text.as_str(), segs[1].end), ("b", 2.5));
        let e = parse_answer(b"<html>oops</html>", 2.0).unwrap_err();
        assert!(
            e.contains("not a verbose_json") && e.contains("oops"),
            "{e}"
        );
        let e = parse_answer(br#"{"text":"only text"}"#, 2.0).unwrap_err();
        assert!(e.contains("segments"), "{e}");
        let late = br#"{"segments":[{"start":5.0,"end":9.0,"text":"x"}]}"#;
        assert!(parse_answer(late, 2.0).unwrap_err().contains("segment 0"));
        let backwards = br#"{"segments":[{"start":1.0,"end":0.5,"text":"x"}]}"#;
        assert!(parse_answer(backwards, 2.0).is_err());
    }

    #[test]
    fn urls() {
        let t = HttpTranscriber::new(
            "http://127.0.0.1:9000",
            "whisper-1",
            None,
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(
            t.endpoint().as_str(),
            "http://127.0.0.1:9000/v1/audio/transcriptions"
        );
        assert_eq!(t.name(), "http(127.0.0.1:9000)");
        let e = HttpTranscriber::new("ftp://x", "m", None, Duration::from_secs(5)).unwrap_err();
        assert!(e.to_string().contains("ftp"), "{e}");
    }
}
