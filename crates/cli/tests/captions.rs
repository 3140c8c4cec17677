//! `idempipe process` with captions, run as the real binary on the sample with speech:
//! the captions files, the closing line, and the clear refusals.

use std::process::Command;

use idempipe_testkit::TempDir;

fn idempipe(dir: &TempDir, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_idempipe"))
        .args(args)
        .args(["--db", &dir.join("state.db").display().to_string()])
        .env("IDEMPIPE_LOG", "warn")
        .output()
        .unwrap()
}

/// The sample with speech.
fn speech() -> String {
    idempipe_testkit::media("bikes-speech.mp4")
        .display()
        .to_string()
}

#[test]
fn process_writes_captions_and_says_so() {
    let speech = speech();
    let dir = TempDir::new("cli-captions");
    let out = dir.join("out.mp4").display().to_string();
    let artifacts = dir.join("artifacts").display().to_string();
    let run = idempipe(
        &dir,
        &[
            "process",
            &speech,
            "-o",
            &out,
            "--artifacts",
            &artifacts,
            "--preset",
            "ultrafast",
        ],
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("captions: ") && stderr.contains("cue(s) in"),
        "{stderr}"
    );
    let vtt = std::fs::read_to_string(dir.join("out.vtt")).unwrap();
    assert!(vtt.to_lowercase().contains("fail better"), "{vtt}");
    assert!(dir.join("out.srt").is_file());
}

#[test]
fn a_truncated_model_is_refused_naming_the_file() {
    let speech = speech();
    let dir = TempDir::new("cli-captions-truncated");
    let real =
        std::path::PathBuf::from(std::env::var("IDEMPIPE_WHISPER_MODEL").unwrap_or_else(|_| {
            format!(
                "{}/.cache/idempipe/models/whisper-tiny.en",
                std::env::var("HOME").unwrap()
            )
        }));
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    for name in ["config.json", "vocabulary.txt"] {
        std::fs::copy(real.join(name), model.join(name)).unwrap();
    }
    let bytes = std::fs::read(real.join("model.bin")).unwrap();
    std::fs::write(model.join("model.bin"), &bytes[..bytes.len() / 2]).unwrap();
    let out = dir.join("out.mp4").display().to_string();
    let model = model.display().to_string();
    let run = idempipe(
        &dir,
        &["process", &speech, "-o", &out, "--whisper-model", &model],
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{model}/model.bin")) && stderr.contains("truncated at byte"),
        "{stderr}"
    );
}

#[test]
fn missing_model_bad_language_and_unreachable_service_are_refused_before_any_work() {
    let speech = speech();
    let dir = TempDir::new("cli-captions-bad");
    let out = dir.join("out.mp4").display().to_string();
    let cases: [(&[&str], &str); 3] = [
        (
            &[
                "--captions",
                "local",
                "--whisper-model",
                "/nonexistent/whisper",
            ],
            "no Whisper model at /nonexistent/whisper/model.bin",
        ),
        (&["--captions-language", "English"], "ISO 639-1"),
        (
            &["--captions", "http://127.0.0.1:9"],
            "http://127.0.0.1:9 is unreachable",
        ),
    ];
    for (flags, expected) in cases {
        let mut args = vec!["process", &speech, "-o", &out];
        args.extend_from_slice(flags);
        let run = idempipe(&dir, &args);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(expected), "{flags:?}: {stderr}");
        assert!(!dir.join("out.mp4").exists());
    }
}
