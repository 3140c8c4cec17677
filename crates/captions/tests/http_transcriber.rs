//! The HTTP transcriber against a real server on a local port: an OpenAI-compatible
//! `POST /v1/audio/transcriptions` that runs the local Whisper model on the WAV it
//! receives, and routes that fail the ways services do.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use idempipe_captions::audio::wav_samples;
use idempipe_captions::{
    HttpTranscriber, LocalTranscriber, ProviderError, TranscribeOptions, Transcriber,
    default_model_dir,
};
use serde_json::json;
use support::{RATE, audio_of, media, wer};

const BECKETT: &str = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better.";

const PATH: &str = "v1/audio/transcriptions";

/// What the server received in one request.
#[derive(Debug, Clone, Default)]
struct Received {
    /// Text fields by name.
    fields: BTreeMap<String, String>,
    /// The `file` part's file name and content type.
    file: Option<(Option<String>, Option<String>)>,
    /// Seconds of audio in the WAV.
    audio_secs: f64,
    /// The `Idempotency-Key` header.
    idempotency_key: Option<String>,
}

#[derive(Clone)]
struct Service {
    model: Option<LocalTranscriber>,
    received: Arc<Mutex<Vec<Received>>>,
}

/// An OpenAI-style error answer.
fn openai_error(status: StatusCode, message: &str) -> Response {
    let body = json!({
        "error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}
    });
    (status, axum::Json(body)).into_response()
}

/// The real route: parse the multipart form, transcribe the WAV, answer verbose_json.
async fn transcribe(
    State(service): State<Service>,
    headers: HeaderMap,
    mut form: Multipart,
) -> Response {
    let mut received = Received {
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        ..Received::default()
    };
    let mut samples = None;
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return openai_error(StatusCode::BAD_REQUEST, &e.to_string()),
        };
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            received.file = Some((
                field.file_name().map(str::to_string),
                field.content_type().map(str::to_string),
            ));
            let bytes = field.bytes().await.unwrap_or_default();
            samples = wav_samples(&bytes);
        } else {
            received
                .fields
                .insert(name, field.text().await.unwrap_or_default());
        }
    }
    let Some(samples) = samples else {
        return openai_error(StatusCode::BAD_REQUEST, "no 16 kHz mono WAV in field file");
    };
    received.audio_secs = samples.len() as f64 / RATE as f64;
    service.received.lock().unwrap().push(received.clone());
    let model = service.model.as_ref().expect("this server has a model");
    let t = match model.transcribe(samples, "server").await {
        Ok(t) => t,
        Err(e) => return openai_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let segments: Vec<_> = t
        .segments
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({"id": i, "seek": 0, "start": s.start, "end": s.end, "text": format!(" {}", s.text)})
        })
        .collect();
    let text: Vec<&str> = t.segments.iter().map(|s| s.text.as_str()).collect();
    axum::Json(json!({
        "task": "transcribe",
        "language": "english",
        "duration": received.audio_secs,
        "text": text.join(" "),
        "segments": segments,
    }))
    .into_response()
}

/// Starts the service on a free port; returns its base URL and what it receives.
async fn start(model: Option<LocalTranscriber>) -> (String, Arc<Mutex<Vec<Received>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let service = Service {
        model,
        received: received.clone(),
    };
    // The failing routes read the whole request first, as a server would, so the
    // client gets the answer rather than a reset connection.
    let app = Router::new()
        .route(&format!("/{PATH}"), post(transcribe))
        .route(
            &format!("/busy/{PATH}"),
            post(|_: Bytes| async {
                let mut r = openai_error(StatusCode::TOO_MANY_REQUESTS, "Rate limit reached");
                r.headers_mut()
                    .insert(header::RETRY_AFTER, "3".parse().unwrap());
                r
            }),
        )
        .route(
            &format!("/bad/{PATH}"),
            post(|_: Bytes| async {
                openai_error(
                    StatusCode::BAD_REQUEST,
                    "Invalid file format. Supported formats: flac, mp3, wav",
                )
            }),
        )
        .route(
            &format!("/html/{PATH}"),
            post(|_: Bytes| async {
                (
                    [(header::CONTENT_TYPE, "text/html")],
                    "<html><body><h1>Welcome to the proxy login page</h1></body></html>",
                )
            }),
        )
        .with_state(service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), received)
}

fn client(base: &str) -> HttpTranscriber {
    HttpTranscriber::new(base, "whisper-1", Some("en"), Duration::from_secs(120)).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn transcribes_real_speech_through_an_openai_compatible_server() {
    let model = LocalTranscriber::load(&default_model_dir(), TranscribeOptions::default())
        .expect("the Whisper model is installed (scripts/fetch-model)");
    let (base, received) = start(Some(model)).await;
    let samples = audio_of(&media("bikes-speech.mp4"));
    let secs = samples.len() as f64 / RATE as f64;
    let t = client(&base)
        .transcribe(samples, "job-1/window-0")
        .await
        .unwrap();
    let text: Vec<&str> = t.segments.iter().map(|s| s.text.as_str()).collect();
    let text = text.join(" ");
    let rate = wer(BECKETT, &text);
    assert!(rate <= 0.10, "WER {rate:.2}: {t:#?}");
    // The server's own decoder may answer 9 s of speech as one segment (the local path
    // times cues from words); what crosses HTTP must keep its times within the audio.
    assert!(
        !t.segments.is_empty()
            && t.segments
                .iter()
                .all(|s| 0.0 <= s.start && s.start <= s.end && s.end <= secs),
        "{t:#?}"
    );
    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 1, "{received:#?}");
    let r = &received[0];
    let fields: Vec<(&str, &str)> = r
        .fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        fields,
        vec![
            ("language", "en"),
            ("model", "whisper-1"),
            ("response_format", "verbose_json"),
        ]
    );
    assert_eq!(
        r.file,
        Some((Some("audio.wav".into()), Some("audio/wav".into())))
    );
    assert!((r.audio_secs - secs).abs() < 1e-6, "{r:?}");
    assert_eq!(r.idempotency_key.as_deref(), Some("job-1/window-0"));
}

#[tokio::test(flavor = "multi_thread")]
async fn service_failures_are_classified() {
    let (base, _) = start(None).await;
    let second = vec![0.0f32; RATE];

    let e = client(&format!("{base}/busy"))
        .transcribe(second.clone(), "k")
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert_eq!(e.status(), Some(429), "{e}");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(3)), "{e}");

    let e = client(&format!("{base}/bad"))
        .transcribe(second.clone(), "k")
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ProviderError::Permanent {
                status: Some(400),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.message()
            .contains("Invalid file format. Supported formats")
            && e.message().contains(&format!("{base}/bad/{PATH}")),
        "{e}"
    );

    let e = client(&format!("{base}/html"))
        .transcribe(second.clone(), "k")
        .await
        .unwrap_err();
    assert!(
        e.is_retryable() && e.status() == Some(200) && e.retry_after().is_none(),
        "{e:?}"
    );
    assert!(
        e.message().contains("answered 200 with") && e.message().contains("proxy login page"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_port_is_a_retryable_error_naming_the_url() {
    // A port that was free a moment ago and is closed now.
    let port = idempipe_testkit::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let e = client(&base)
        .transcribe(vec![0.0; RATE], "k")
        .await
        .unwrap_err();
    assert!(e.is_retryable() && e.status().is_none(), "{e:?}");
    let url = format!("{base}/{PATH}");
    assert!(
        e.message().contains(&url) && e.message().contains("could not connect"),
        "{e}"
    );
}
