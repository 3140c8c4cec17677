//! Real-time factor of local Whisper transcription: how many seconds of audio one wall
//! second transcribes, for the whole audio in one call (the seek loop over 30 s passes)
//! and window by window (as the pipeline does).
//!
//! `cargo bench -p idempipe-captions --bench transcribe`. The audio is about 65 s of
//! espeak-ng speech unless `IDEMPIPE_BENCH_AUDIO` names a media file (its audio is
//! decoded with ffmpeg); `IDEMPIPE_BENCH_RUNS` sets the runs per mode (default 3);
//! `IDEMPIPE_WHISPER_MODEL` the model directory. `RAYON_NUM_THREADS` changes the number
//! of threads candle uses.

#[path = "../tests/support.rs"]
mod support;

use std::time::Instant;

use idempipe_captions::mel::mel_filters;
use idempipe_captions::{
    TranscribeOptions, WhisperModel, WindowOptions, default_model_dir, speech_windows, transcribe,
};
use support::{RATE, SENTENCES, audio_of, speak, wer};

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn report(mode: &str, audio_secs: f64, walls: &[f64], detail: &str) {
    let rtfs: Vec<f64> = walls.iter().map(|w| audio_secs / w).collect();
    let min_rtf = rtfs.iter().copied().fold(f64::INFINITY, f64::min);
    let wall_list: Vec<String> = walls.iter().map(|w| format!("{w:.2}")).collect();
    println!(
        "{mode:<8} audio {audio_secs:.1} s | wall s [{}] median {:.2} | real-time factor \
         (audio s / wall s) min {min_rtf:.2} median {:.2} | {detail}",
        wall_list.join(", "),
        median(walls),
        median(&rtfs),
    );
}

fn main() {
    let runs: usize = std::env::var("IDEMPIPE_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(3);
    let (samples, reference, source) = match std::env::var_os("IDEMPIPE_BENCH_AUDIO") {
        Some(path) => {
            let path = std::path::PathBuf::from(path);
            (audio_of(&path), None, path.display().to_string())
        }
        None => (
            speak(0.0, SENTENCES).samples,
            Some(SENTENCES.join(" ")),
            format!("espeak-ng, {} sentences", SENTENCES.len()),
        ),
    };
    let audio_secs = samples.len() as f64 / RATE as f64;

    let dir = default_model_dir();
    let started = Instant::now();
    let mut model = WhisperModel::load(&dir).unwrap_or_else(|e| panic!("{e}"));
    let filters = mel_filters(model.config.num_mel_bins);
    let load_secs = started.elapsed().as_secs_f64();
    let options = TranscribeOptions::default();
    println!("audio: {source}, {audio_secs:.1} s; runs per mode: {runs}");
    println!("model: {} loaded in {load_secs:.2} s", dir.display());
    println!(
        "candle: {} threads (of {} CPUs), avx {}, f16c {}",
        candle_core::utils::get_num_threads(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        candle_core::utils::with_avx(),
        candle_core::utils::with_f16c(),
    );

    let quality = |text: &str| {
        reference
            .as_ref()
            .map_or_else(String::new, |r| format!(", WER {:.3}", wer(r, text)))
    };

    let mut walls = Vec::new();
    let mut detail = String::new();
    for _ in 0..runs {
        let started = Instant::now();
        let t = transcribe(&mut model, &filters, &samples, &options).expect("transcribes");
        walls.push(started.elapsed().as_secs_f64());
        let text: Vec<&str> = t.segments.iter().map(|s| s.text.as_str()).collect();
        detail = format!(
            "{} passes, {} fallbacks, {} segments{}",
            t.passes,
            t.fallbacks,
            t.segments.len(),
            quality(&text.join(" "))
        );
    }
    report("whole", audio_secs, &walls, &detail);

    let windows = speech_windows(&samples, &WindowOptions::default());
    let mut walls = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let mut texts = Vec::new();
        let mut passes = 0;
        for w in &windows {
            let t = transcribe(&mut model, &filters, &samples[w.start..w.end], &options)
                .expect("transcribes");
            passes += t.passes;
            texts.extend(t.segments.into_iter().map(|s| s.text));
        }
        walls.push(started.elapsed().as_secs_f64());
        detail = format!(
            "{} windows, {passes} passes{}",
            windows.len(),
            quality(&texts.join(" "))
        );
    }
    report("windowed", audio_secs, &walls, &detail);
}
