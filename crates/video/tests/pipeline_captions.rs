//! Captions end to end: real Whisper on real speech, files and subtitle track, runs
//! without speech, and a transcription service whose failures are retried per window.

#[path = "support/pipeline.rs"]
mod support;

#[path = "support/media.rs"]
#[allow(unused_imports)]
mod media_support;

#[path = "support/captions.rs"]
mod captions_support;

use std::sync::Arc;

use axum::http::StatusCode;
use captions_support::{caption_text, espeak, start_transcription_server, wer};
use idempipe_engine::{RunStatus, SharedStore, connect};
use idempipe_video::pipeline::{CAPTIONS_LOCAL, CaptionSettings, Settings};
use media_support::{ffmpeg, ffprobe_json, stream};
use support::{TempDir, assert_each_frame_completed_once, process, request, sample, settings};

const BECKETT: &str = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better.";

fn with_captions(provider: &str) -> Settings {
    Settings {
        captions: CaptionSettings {
            provider: provider.into(),
            ..CaptionSettings::default()
        },
        ..settings("local")
    }
}

async fn store_in(dir: &TempDir) -> SharedStore {
    connect(&dir.join("state.db").display().to_string())
        .await
        .unwrap()
}

fn report(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn speech_gets_webvtt_srt_and_a_subtitle_track() {
    let dir = TempDir::new("captions-speech");
    let store = store_in(&dir).await;
    let req = request(
        &sample("bikes-speech.mp4"),
        dir.path(),
        with_captions(CAPTIONS_LOCAL),
    );
    let (start, run) = process(&store, &req, 2).await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.summary);

    let vtt = std::fs::read_to_string(start.params.captions_vtt()).unwrap();
    let srt = std::fs::read_to_string(start.params.captions_srt()).unwrap();
    assert!(vtt.starts_with("WEBVTT\n\n00:00:"), "{vtt}");
    assert!(srt.starts_with("1\n00:00:"), "{srt}");
    for text in [caption_text(&vtt), caption_text(&srt)] {
        let rate = wer(BECKETT, &text);
        assert!(rate <= 0.10, "WER {rate:.2}: {text:?}");
    }

    let probe = ffprobe_json(&req.output);
    let track = stream(&probe, "subtitle").expect("a subtitle track");
    assert_eq!(track["codec_name"], "mov_text");
    assert_eq!(track["tags"]["language"], "eng");
    assert!(stream(&probe, "audio").is_some(), "the audio is kept");
    // The track holds the words: read it back as SRT.
    let muxed = dir.join("muxed.srt");
    ffmpeg(&[
        "-i",
        &req.output.display().to_string(),
        "-map",
        "0:s:0",
        &muxed.display().to_string(),
    ]);
    let muxed = caption_text(&std::fs::read_to_string(muxed).unwrap());
    assert!(wer(BECKETT, &muxed) <= 0.10, "{muxed:?}");

    let report = report(&start.params.report);
    let cues = srt.matches("-->").count();
    assert_eq!(
        report["captions"]["cues"].as_u64(),
        Some(cues as u64),
        "{}",
        report["captions"]
    );
    assert_eq!(report["captions"]["windows"], 1);
    assert!(report["captions"]["real_time_factor"].as_f64().unwrap() > 0.0);
}

/// A copy of the silent-video sample with an audio track from an ffmpeg source.
fn with_audio(dir: &TempDir, source: &str, name: &str) -> std::path::PathBuf {
    let out = dir.join(name);
    ffmpeg(&[
        "-i",
        &sample("bikes.mp4").display().to_string(),
        "-f",
        "lavfi",
        "-i",
        source,
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-c:v",
        "copy",
        "-c:a",
        "aac",
        "-shortest",
        &out.display().to_string(),
    ]);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn no_audio_or_no_speech_means_no_captions_and_a_reason_not_a_failure() {
    let dir = TempDir::new("captions-none");
    let cases = [
        (sample("bikes.mp4"), "the input has no audio track"),
        (
            with_audio(&dir, "anullsrc=r=44100:cl=stereo", "silent.mp4"),
            "no speech was detected in the audio",
        ),
        // Music and animal calls, no speech.
        (
            sample("bigbuckbunny.mp4"),
            "no speech was detected in the audio",
        ),
    ];
    for (i, (input, reason)) in cases.iter().enumerate() {
        let sub = TempDir::new(&format!("captions-none-{i}"));
        let store = store_in(&sub).await;
        let req = request(input, sub.path(), with_captions(CAPTIONS_LOCAL));
        let (start, run) = process(&store, &req, 2).await;
        assert_eq!(
            run.status,
            RunStatus::Completed,
            "{input:?}: {:?}",
            run.summary
        );
        let report = report(&start.params.report);
        assert_eq!(report["captions"]["reason"], *reason, "{input:?}");
        assert_eq!(report["captions"]["cues"], 0);
        assert!(!start.params.captions_vtt().exists() && !start.params.captions_srt().exists());
        assert!(stream(&ffprobe_json(&req.output), "subtitle").is_none());
    }
}

/// Sentences long enough together (over 30 s) to need two windows.
const SENTENCES: [&str; 9] = [
    "The quick brown fox jumps over the lazy dog.",
    "A journey of a thousand miles begins with a single step.",
    "She sells sea shells by the sea shore every summer morning.",
    "The weather today is cold and windy with a chance of rain.",
    "Please remember to turn off the lights when you leave the room.",
    "Our train to the city leaves at seven in the evening.",
    "Reading books is a wonderful way to learn about the world.",
    "The children played football in the park until it was dark.",
    "Thank you very much for listening to this short recording.",
];

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_window_is_retried_alone_through_a_transcription_service() {
    let dir = TempDir::new("captions-http");
    let wav = dir.join("speech.wav");
    espeak(&SENTENCES, &wav);
    let input = dir.join("speech.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x96:rate=5",
        "-i",
        &wav.display().to_string(),
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "10",
        "-c:a",
        "aac",
        "-shortest",
        &input.display().to_string(),
    ]);
    // The second window's first request fails with 503; everything else is served.
    let fail: captions_support::Fail = Arc::new(|key: &str, before: usize| {
        (key.ends_with("window/0001") && before == 0).then_some(StatusCode::SERVICE_UNAVAILABLE)
    });
    let server = start_transcription_server(&CaptionSettings::default().model_dir, fail).await;
    let store = store_in(&dir).await;
    let req = request(&input, dir.path(), with_captions(&server.url));
    let (start, run) = process(&store, &req, 2).await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.summary);

    let calls = server.calls.lock().unwrap().clone();
    let mut keys: Vec<_> = calls.iter().collect();
    keys.sort();
    assert!(keys.len() >= 2, "at least two windows: {keys:?}");
    for (key, n) in &keys {
        let expected = if key.ends_with("window/0001") { 2 } else { 1 };
        assert_eq!(**n, expected, "{key}: {keys:?}");
    }
    assert_each_frame_completed_once(&store, start.run_id).await;

    let text = caption_text(&std::fs::read_to_string(start.params.captions_srt()).unwrap());
    let rate = wer(&SENTENCES.join(" "), &text);
    assert!(rate <= 0.20, "WER {rate:.2}: {text:?}");
    let report = report(&start.params.report);
    let failures = report["failures"].as_array().unwrap();
    assert!(
        failures
            .iter()
            .any(|f| f["stage"] == "transcribe" && f["key"] == "window/0001"),
        "the failed attempt is in the report: {failures:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_uses_its_own_model_directory_when_given_one() {
    use idempipe_video::pipeline::{DriveOutcome, drive, start_or_resume};
    let dir = TempDir::new("captions-worker-model");
    // Submitted with a model directory that is gone by the time a worker runs it.
    let submitted = dir.join("submitter-model");
    std::fs::create_dir_all(&submitted).unwrap();
    let real = CaptionSettings::default().model_dir;
    for name in ["model.bin", "config.json", "vocabulary.txt"] {
        std::fs::copy(real.join(name), submitted.join(name)).unwrap();
    }
    let mut settings = with_captions(CAPTIONS_LOCAL);
    settings.captions.model_dir = submitted.clone();
    let store = store_in(&dir).await;
    let req = request(&sample("bikes-speech.mp4"), dir.path(), settings);
    let start = start_or_resume(&store, &req).await.unwrap();
    std::fs::remove_dir_all(&submitted).unwrap();

    let mut options = support::drive_options(2);
    options.pipeline.whisper_model = Some(real);
    let outcome = drive(
        store.clone(),
        start.run_id,
        &options,
        std::future::pending(),
    )
    .await
    .unwrap();
    let DriveOutcome::Finished(run) = outcome else {
        unreachable!("never interrupted")
    };
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.summary);
    let srt = std::fs::read_to_string(start.params.captions_srt()).unwrap();
    assert!(wer(BECKETT, &caption_text(&srt)) <= 0.10, "{srt}");
}
