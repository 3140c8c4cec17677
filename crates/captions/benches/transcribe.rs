//! Speed and accuracy of local Whisper transcription, optionally side by side with
//! faster-whisper (CTranslate2) loading the same model directory on the same audio.
//!
//! `cargo bench -p idempipe-captions --bench transcribe`. The audio is
//! `media/two-cities.opus` (44 s of a read audiobook with a known transcript, so the
//! word error rate is printed) unless `IDEMPIPE_BENCH_AUDIO` names another media file
//! (decoded with ffmpeg; no WER then). `IDEMPIPE_BENCH_RUNS` sets the runs per mode
//! (default 3); `IDEMPIPE_BENCH_MODES` a comma-separated choice of modes (`greedy`,
//! `beam 5`, `greedy+words`, `greedy+vad`); `IDEMPIPE_WHISPER_MODEL` the model
//! directory; `RAYON_NUM_THREADS` the threads candle uses. With
//! `IDEMPIPE_BENCH_FASTER_WHISPER=1`, the same modes run in faster-whisper
//! (`pip install faster-whisper`) with as many CPU threads, float32, with its
//! `vad_filter` off except in `greedy+vad` (as on our side).
//!
//! Both sides transcribe the audio once untimed first. Each mode prints the wall time and
//! the CPU time of the runs (median), the real-time
//! factor (audio seconds per wall second) and the WER. On a shared machine the CPU
//! seconds per audio second are the steadier figure.

#[path = "../tests/support.rs"]
mod support;

use std::process::Command;
use std::time::Instant;

use idempipe_captions::mel::mel_filters;
use idempipe_captions::{TranscribeOptions, WhisperModel, default_model_dir, transcribe};
use support::{RATE, TWO_CITIES_FILE, TWO_CITIES_TEXT, audio_of, media, wer};

/// The modes: name, beam size, word timestamps, voice activity detection.
const MODES: &[(&str, usize, bool, bool)] = &[
    ("greedy", 1, false, false),
    ("beam 5", 5, false, false),
    ("greedy+words", 1, true, false),
    ("greedy+vad", 1, false, true),
];

/// Runs the same modes in faster-whisper and prints one JSON line per mode.
const FASTER_WHISPER: &str = r#"
import json, sys, time
from faster_whisper import WhisperModel
model_dir, wav, runs, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
modes = json.loads(sys.argv[5])
model = WhisperModel(model_dir, device="cpu", compute_type="float32", cpu_threads=threads)
list(model.transcribe(wav, beam_size=1)[0])  # warm-up, not timed
for beam, words, vad in modes:
    walls, cpus, text = [], [], ""
    for _ in range(runs):
        w0, c0 = time.perf_counter(), time.process_time()
        segments, _ = model.transcribe(wav, beam_size=beam, word_timestamps=words, vad_filter=vad)
        text = " ".join(s.text.strip() for s in segments)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    print(json.dumps({"beam": beam, "words": words, "walls": walls, "cpus": cpus, "text": text}))
"#;

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

/// CPU time (user and system) of this process so far, in seconds.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line; 100 ticks per second.
    (ticks(11) + ticks(12)) / 100.0
}

struct Measured {
    walls: Vec<f64>,
    cpus: Vec<f64>,
    text: String,
}

fn report(who: &str, mode: &str, audio_secs: f64, m: &Measured, reference: Option<&str>) {
    let wall = median(&m.walls);
    let cpu = median(&m.cpus);
    let quality = reference.map_or_else(String::new, |r| format!(" | WER {:.3}", wer(r, &m.text)));
    println!(
        "{who:<14} {mode:<13} wall {wall:6.2} s (real-time x{:5.2}) | CPU {cpu:6.2} s ({:.3} CPU s per audio s){quality}",
        audio_secs / wall,
        cpu / audio_secs,
    );
}

fn faster_whisper(
    dir: &std::path::Path,
    samples: &[f32],
    runs: usize,
    threads: usize,
    modes: &[(&str, usize, bool, bool)],
) -> Vec<Measured> {
    let modes: Vec<(usize, bool, bool)> = modes.iter().map(|&(_, b, w, v)| (b, w, v)).collect();
    let wav = std::env::temp_dir().join(format!("idempipe-bench-{}.wav", std::process::id()));
    std::fs::write(&wav, idempipe_captions::audio::wav_bytes(samples)).expect("writes the WAV");
    let out = Command::new("python3")
        .arg("-c")
        .arg(FASTER_WHISPER)
        .arg(dir)
        .arg(&wav)
        .arg(runs.to_string())
        .arg(threads.to_string())
        .arg(serde_json::to_string(&modes).expect("modes serialise"))
        .output()
        .expect("python3 runs");
    let _ = std::fs::remove_file(&wav);
    assert!(
        out.status.success(),
        "faster-whisper failed (pip install faster-whisper): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            let floats = |k: &str| -> Vec<f64> {
                v[k].as_array()
                    .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
                    .unwrap_or_default()
            };
            Measured {
                walls: floats("walls"),
                cpus: floats("cpus"),
                text: v["text"].as_str().unwrap_or_default().to_string(),
            }
        })
        .collect()
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
        None => {
            let path = media(TWO_CITIES_FILE);
            (
                audio_of(&path),
                Some(TWO_CITIES_TEXT),
                path.display().to_string(),
            )
        }
    };
    let audio_secs = samples.len() as f64 / RATE as f64;

    let dir = default_model_dir();
    let started = Instant::now();
    let mut model = WhisperModel::load(&dir).unwrap_or_else(|e| panic!("{e}"));
    let filters = mel_filters(model.config.num_mel_bins);
    let threads = candle_core::utils::get_num_threads();
    println!("audio: {source}, {audio_secs:.1} s; runs per mode: {runs}");
    println!(
        "model: {} loaded in {:.2} s",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "candle: {threads} threads (of {} CPUs), avx {}, f16c {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        candle_core::utils::with_avx(),
        candle_core::utils::with_f16c(),
    );

    // Warm-up, not timed (as for faster-whisper).
    let warm_up = TranscribeOptions {
        beam_size: 1,
        ..TranscribeOptions::default()
    };
    transcribe(&mut model, &filters, &samples, &warm_up).expect("transcribes");
    // IDEMPIPE_BENCH_MODES: a comma-separated choice of the modes' names.
    let chosen = std::env::var("IDEMPIPE_BENCH_MODES").ok();
    let modes: Vec<(&str, usize, bool, bool)> = MODES
        .iter()
        .copied()
        .filter(|(name, ..)| {
            chosen
                .as_deref()
                .is_none_or(|c| c.split(',').any(|m| m.trim() == *name))
        })
        .collect();
    let mut ours = Vec::new();
    for &(mode, beam_size, word_timestamps, vad_filter) in &modes {
        let options = TranscribeOptions {
            beam_size,
            word_timestamps,
            vad_filter,
            ..TranscribeOptions::default()
        };
        let mut m = Measured {
            walls: Vec::new(),
            cpus: Vec::new(),
            text: String::new(),
        };
        for _ in 0..runs {
            let (wall, cpu) = (Instant::now(), cpu_secs());
            let t = transcribe(&mut model, &filters, &samples, &options).expect("transcribes");
            m.walls.push(wall.elapsed().as_secs_f64());
            m.cpus.push(cpu_secs() - cpu);
            let texts: Vec<&str> = t.segments.iter().map(|s| s.text.as_str()).collect();
            m.text = texts.join(" ");
        }
        report("idempipe", mode, audio_secs, &m, reference);
        ours.push(m);
    }
    if std::env::var("IDEMPIPE_BENCH_FASTER_WHISPER").as_deref() == Ok("1") {
        let theirs = faster_whisper(&dir, &samples, runs, threads, &modes);
        for (&(mode, ..), m) in modes.iter().zip(&theirs) {
            report("faster-whisper", mode, audio_secs, m, reference);
        }
        for ((&(mode, ..), a), b) in modes.iter().zip(&ours).zip(&theirs) {
            println!(
                "ratio          {mode:<13} idempipe / faster-whisper: wall {:.2}, CPU {:.2}",
                median(&a.walls) / median(&b.walls),
                median(&a.cpus) / median(&b.cpus),
            );
        }
    }
}
