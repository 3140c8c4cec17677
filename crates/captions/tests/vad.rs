//! Voice activity detection (Silero VAD v6 on candle) on real recordings: read speech
//! is speech, music and silence are not, and the pipeline's windows follow the speech.

mod support;

use idempipe_captions::vad::{CHUNK, speech_probabilities};
use idempipe_captions::{WindowOptions, speech_windows, speech_windows_in_pcm};
use support::{RATE, TWO_CITIES_FILE, audio_of, media};

/// Share of chunks at or above 0.5.
fn speech_share(probs: &[f32]) -> f64 {
    probs.iter().filter(|&&p| p >= 0.5).count() as f64 / probs.len() as f64
}

/// Values checked against the ONNX model run by onnxruntime (faster-whisper's
/// `SileroVADModel`) on the same samples: the largest difference over the 1387 chunks
/// of the audiobook was 7e-7.
#[test]
fn read_speech_is_speech_and_music_and_silence_are_not() {
    let speech = audio_of(&media(TWO_CITIES_FILE));
    let p = speech_probabilities(&speech).unwrap();
    assert_eq!(p.len(), speech.len() / CHUNK + 1);
    let share = speech_share(&p);
    assert!(share > 0.6, "only {share:.2} of the audiobook is speech");
    assert!(p.iter().filter(|&&x| x > 0.99).count() > 100, "{p:?}");
    // The reader starts after 1.2 s of room noise.
    assert!(p[..37].iter().all(|&x| x < 0.5), "{:?}", &p[..37]);
    // onnxruntime's values for chunks 100 to 104 of the same audio.
    let reference = [
        0.995_107_2f32,
        0.995_364_5,
        0.991_147_4,
        0.995_536_1,
        0.995_706,
    ];
    for (k, (&ours, &theirs)) in p[100..105].iter().zip(&reference).enumerate() {
        assert!(
            (ours - theirs).abs() < 1e-3,
            "chunk {}: {ours} vs {theirs}",
            100 + k
        );
    }

    let music = audio_of(&media("bigbuckbunny.mp4"));
    let p = speech_probabilities(&music).unwrap();
    let peak = p.iter().copied().fold(0.0f32, f32::max);
    assert!(peak < 0.9, "music peaks at {peak}");

    let silence = speech_probabilities(&vec![0.0; 3 * RATE]).unwrap();
    assert!(silence.iter().all(|&x| x < 0.1), "{silence:?}");
}

#[test]
fn windows_cover_the_speech_and_a_pcm_file_gives_the_same() {
    let samples = audio_of(&media(TWO_CITIES_FILE));
    let windows = speech_windows(&samples, &WindowOptions::default()).unwrap();
    assert_eq!(windows.len(), 2, "{windows:?}");
    // The reader speaks from 1.2 s to 41.7 s of 44.4 s, with no pause of 2 s, so
    // the speech is one stretch cut under 30 s; faster-whisper (same options) finds the
    // segments 13056-476928 and 476928-673024 (samples, padding of 0.4 s included).
    let expected = [(13056, 476928), (476928, 673024)];
    for (w, (start, end)) in windows.iter().zip(expected) {
        let close = |a: usize, b: usize| a.abs_diff(b) <= CHUNK;
        assert!(close(w.start, start) && close(w.end, end), "{windows:?}");
    }
    assert!(windows.iter().all(|w| w.secs() <= 30.0), "{windows:?}");

    let bytes: Vec<u8> = samples
        .iter()
        .flat_map(|&s| ((s * 32768.0).round() as i16).to_le_bytes())
        .collect();
    let path = std::env::temp_dir().join(format!("idempipe-vad-{}.pcm", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    let from_file = speech_windows_in_pcm(&path, &WindowOptions::default());
    std::fs::remove_file(&path).unwrap();
    assert_eq!(from_file.unwrap(), windows);

    let music = audio_of(&media("bigbuckbunny.mp4"));
    assert!(
        speech_windows(&music, &WindowOptions::default())
            .unwrap()
            .is_empty()
    );
}
