//! Settings are checked before the first frame, an invalid setting met at run time fails
//! at once, and the encoder settings and the API can change on an existing run without
//! enhancing a frame again. The real binary against real enhancement servers (in this
//! process, counting their calls and recording the idempotency keys they receive).

use std::collections::BTreeSet;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idempipe_engine::model::idempotency_key;
use idempipe_engine::store::ItemFilter;
use idempipe_engine::{ItemStatus, RunStatus, SharedStore, connect};
use idempipe_enhance::server::{ServerConfig, ServerState, ServerStats};
use idempipe_testkit::TempDir;
use idempipe_video::pipeline::{DriveOptions, DriveOutcome, ProgressStyle, drive};

/// A real enhancement server with its counters and the Idempotency-Key of every request.
struct Api {
    url: String,
    stats: Arc<ServerStats>,
    keys: Arc<Mutex<Vec<String>>>,
}

impl Api {
    async fn start() -> Self {
        let state = ServerState::new(ServerConfig::default()).unwrap();
        let stats = state.stats();
        let keys = Arc::new(Mutex::new(Vec::new()));
        let seen = keys.clone();
        let app = idempipe_enhance::router(state).layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let seen = seen.clone();
                async move {
                    if let Some(key) = req.headers().get("idempotency-key") {
                        let key = key.to_str().unwrap_or_default().to_owned();
                        seen.lock().unwrap().push(key);
                    }
                    next.run(req).await
                }
            },
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, stats, keys }
    }

    fn keys(&self) -> BTreeSet<String> {
        self.keys.lock().unwrap().iter().cloned().collect()
    }

    fn requests(&self) -> usize {
        self.keys.lock().unwrap().len()
    }
}

/// A test's directory, database and the sample input (120 frames, 176x144).
struct Case {
    dir: TempDir,
    input: String,
    out: String,
    artifacts: String,
}

impl Case {
    fn new(label: &str) -> Self {
        let dir = TempDir::new(label);
        Self {
            input: idempipe_testkit::media("carphone_pristine.mp4")
                .display()
                .to_string(),
            out: dir.join("out.mp4").display().to_string(),
            artifacts: dir.join("artifacts").display().to_string(),
            dir,
        }
    }

    fn db(&self) -> String {
        self.dir.join("state.db").display().to_string()
    }

    async fn store(&self) -> SharedStore {
        connect(&self.db()).await.unwrap()
    }

    /// Runs the binary with the database added.
    async fn idempipe(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_idempipe"))
            .args(args)
            .args(["--db", &self.db()])
            .env("IDEMPIPE_LOG", "warn")
            .output()
            .await
            .unwrap()
    }

    /// `process` or `submit` of the sample with `api`, captions off, and `extra` flags.
    async fn start(&self, command: &str, api: &str, extra: &[&str]) -> Output {
        let mut args = vec![
            command,
            &self.input,
            "-o",
            &self.out,
            "--artifacts",
            &self.artifacts,
            "--api",
            api,
            "--captions",
            "off",
        ];
        args.extend_from_slice(extra);
        self.idempipe(&args).await
    }

    /// Submits the run and returns its id.
    async fn submit(&self, api: &str, extra: &[&str]) -> i64 {
        let out = self.start("submit", api, extra).await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }

    /// Stores `preset` in the run's settings as if it had been accepted.
    async fn store_preset(&self, run: i64, preset: &str) {
        let store = self.store().await;
        let mut params = store.run_get(run).await.unwrap().params;
        params["settings"]["preset"] = preset.into();
        store.run_set_params(run, &params).await.unwrap();
    }

    /// Works on the run in this process until it ends or `interrupt` resolves.
    async fn drive(
        &self,
        run: i64,
        interrupt: impl std::future::Future<Output = ()>,
    ) -> DriveOutcome {
        let options = DriveOptions {
            concurrency: 2,
            progress: ProgressStyle::Quiet,
            ..DriveOptions::default()
        };
        drive(self.store().await, run, &options, interrupt)
            .await
            .unwrap()
    }

    async fn items(&self, run: i64, stage: &str, status: Option<ItemStatus>) -> Vec<String> {
        let filter = ItemFilter {
            run_id: run,
            stage: Some(stage.into()),
            statuses: status.into_iter().collect(),
            limit: 0,
            after_id: 0,
        };
        let store = self.store().await;
        let items = store.item_list(&filter).await.unwrap();
        items.into_iter().map(|i| i.key).collect()
    }

    /// The libx264 options written into the output's SEI (`... subme=7 ...`).
    fn x264_options(&self) -> String {
        let bytes = std::fs::read(&self.out).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        let start = text
            .find("options: ")
            .expect("the output has x264's options SEI");
        text[start..].chars().take(600).collect()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A typo costs nothing: `process` and `submit` exit 2 naming the flag and what is
/// accepted, before any run exists and before one call reaches the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_settings_exit_2_before_any_work_or_call() {
    let api = Api::start().await;
    let case = Case::new("cli-settings-typos");
    let cases: [(&str, &str, &[&str]); 7] = [
        (
            "--preset",
            "bogus",
            &["--preset \"bogus\"", "ultrafast", "veryslow"],
        ),
        (
            "--preset",
            "Medium",
            &["--preset \"Medium\"", "did you mean medium?"],
        ),
        ("--crf", "99", &["--crf", "0..=51"]),
        ("--segment-seconds", "0", &["--segment-seconds 0", "> 0"]),
        ("--api-rate", "0.05", &["--api-rate 0.05", ">= 0.1"]),
        (
            "--segments-in-flight",
            "0",
            &["--segments-in-flight 0", ">= 1"],
        ),
        ("--sharpness", "9", &["--sharpness 9", "from 0"]),
    ];
    for (flag, value, expected) in cases {
        for command in ["process", "submit"] {
            let out = case.start(command, &api.url, &[flag, value]).await;
            let err = stderr(&out);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{command} {flag} {value}: {err}"
            );
            for e in expected {
                assert!(
                    err.contains(e),
                    "{command} {flag} {value}: {e:?} not in {err}"
                );
            }
        }
    }
    assert_eq!(api.requests(), 0, "no call reached the API");
    assert_eq!(api.stats.snapshot().requests, 0);
    let store = case.store().await;
    assert!(
        store.run_list(10).await.unwrap().is_empty(),
        "no run exists"
    );
}

/// A run whose stored preset is invalid (case matters to libx264) fails encode after ONE
/// attempt with a permanent error; `retry RUN --preset` fixes it: the same run finishes
/// with the new preset, and no frame reaches the API again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_preset_fails_once_and_retry_with_a_new_preset_keeps_the_frames() {
    let api = Api::start().await;
    let case = Case::new("cli-settings-retry-preset");
    let run = case.submit(&api.url, &["--preset", "ultrafast"]).await;
    case.store_preset(run, "Medium").await;
    let DriveOutcome::Finished(ended) = case.drive(run, std::future::pending()).await else {
        panic!("not interrupted");
    };
    assert_eq!(ended.status, RunStatus::Failed);
    let frames = case.items(run, "frame", Some(ItemStatus::Completed)).await;
    assert_eq!(frames.len(), 120);
    assert_eq!(api.stats.enhance_calls(), 120);
    let store = case.store().await;
    let encodes = case.items(run, "encode", None).await;
    assert!(!encodes.is_empty());
    for key in &encodes {
        let item = store.item_get(run, "encode", key).await.unwrap();
        assert_eq!(item.status, ItemStatus::Dead, "encode {key}");
        assert_eq!(item.attempts, 1, "encode {key}: one attempt only");
        let error = item.last_error.unwrap();
        assert_eq!(error["kind"], "permanent", "{error}");
        assert!(
            error["message"].as_str().unwrap().contains("Medium"),
            "{error}"
        );
    }

    let retry = case
        .idempipe(&["retry", &run.to_string(), "--preset", "veryfast"])
        .await;
    let said = stdout(&retry);
    assert_eq!(retry.status.code(), Some(0), "{said}{}", stderr(&retry));
    assert!(
        said.contains(&format!("run {run}: preset Medium -> veryfast"))
            && said.contains("120 enhanced frame(s) kept")
            && said.contains("re-encoding"),
        "{said}"
    );
    let resumed = case
        .start("process", &api.url, &["--preset", "veryfast"])
        .await;
    let err = stderr(&resumed);
    assert_eq!(resumed.status.code(), Some(0), "{err}");
    assert!(err.contains(&format!("resuming run {run}")), "{err}");
    assert_eq!(
        api.stats.enhance_calls(),
        120,
        "no frame was enhanced again"
    );
    assert_eq!(api.requests(), 120, "no frame was sent again");
    assert_eq!(store.run_list(10).await.unwrap().len(), 1, "no new run");
    let options = case.x264_options();
    // veryfast is subme=2 (ultrafast 0, medium 7).
    assert!(options.contains(" subme=2 "), "{options}");
}

/// Rerunning `process` with another preset on a run that failed at encode changes the
/// preset of that run (with a notice) instead of starting a new one; once it completed
/// (its enhanced frames deleted) `retry --preset` is refused, exit 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_rerun_with_a_new_preset_re_encodes_the_same_run() {
    let api = Api::start().await;
    let case = Case::new("cli-settings-process-preset");
    let run = case.submit(&api.url, &["--preset", "ultrafast"]).await;
    case.store_preset(run, "bogus").await;
    let DriveOutcome::Finished(ended) = case.drive(run, std::future::pending()).await else {
        panic!("not interrupted");
    };
    assert_eq!(ended.status, RunStatus::Failed);
    assert_eq!(api.stats.enhance_calls(), 120);

    let rerun = case.start("process", &api.url, &["--preset", "slow"]).await;
    let err = stderr(&rerun);
    assert_eq!(rerun.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!("run {run}: preset bogus -> slow"))
            && err.contains("120 enhanced frame(s) kept"),
        "{err}"
    );
    assert_eq!(
        api.stats.enhance_calls(),
        120,
        "no frame was enhanced again"
    );
    assert_eq!(api.requests(), 120);
    let store = case.store().await;
    assert_eq!(store.run_list(10).await.unwrap().len(), 1, "no new run");
    let params = store.run_get(run).await.unwrap().params;
    assert_eq!(params["settings"]["preset"], "slow");
    let options = case.x264_options();
    assert!(options.contains(" subme=8 "), "slow is subme=8: {options}");

    let refused = case
        .idempipe(&["retry", &run.to_string(), "--preset", "medium"])
        .await;
    let err = stderr(&refused);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(
        err.contains("completed") && err.contains("enhanced frames were deleted"),
        "{err}"
    );
    let params = store.run_get(run).await.unwrap().params;
    assert_eq!(params["settings"]["preset"], "slow", "nothing changed");
}

/// A run interrupted while enhancing at API A, rerun with `--api B`: the same run goes
/// on; frames done at A are not sent to B; the others go to B with exactly the keys
/// they had (run, stage and frame: never the URL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_api_gets_only_the_frames_not_yet_enhanced_with_the_same_keys() {
    let a = Api::start().await;
    let b = Api::start().await;
    let case = Case::new("cli-settings-api");
    let run = case.submit(&a.url, &["--preset", "ultrafast"]).await;
    let stats = a.stats.clone();
    let interrupt = async move {
        while stats.enhance_calls() < 30 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    assert!(matches!(
        case.drive(run, interrupt).await,
        DriveOutcome::Interrupted
    ));
    let done_at_a: BTreeSet<String> = case
        .items(run, "frame", Some(ItemStatus::Completed))
        .await
        .into_iter()
        .collect();
    assert!(
        (30..120).contains(&done_at_a.len()),
        "{} frames done at A",
        done_at_a.len()
    );
    let a_requests = a.requests();

    let rerun = case
        .start("process", &b.url, &["--preset", "ultrafast"])
        .await;
    let err = stderr(&rerun);
    assert_eq!(rerun.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!("run {run}: api {} -> {}", a.url, b.url)),
        "{err}"
    );
    assert_eq!(a.requests(), a_requests, "nothing more went to A");
    let store = case.store().await;
    assert_eq!(store.run_list(10).await.unwrap().len(), 1, "no new run");
    let all = case.items(run, "frame", None).await;
    assert_eq!(all.len(), 120);
    let expected: BTreeSet<String> = all
        .iter()
        .filter(|k| !done_at_a.contains(*k))
        .map(|k| idempotency_key(run, "frame", k))
        .collect();
    assert_eq!(
        b.keys(),
        expected,
        "B got exactly the rest, with their keys"
    );
    assert_eq!(b.stats.enhance_calls() as usize, 120 - done_at_a.len());
    // A frame that was on its way at A when interrupted went to B under the same key.
    for key in a.keys().intersection(&b.keys()) {
        assert!(key.starts_with(&format!("idempipe:{run}:frame:")), "{key}");
    }
}

/// `retry RUN --api URL` on a run interrupted at API A moves the frames not yet enhanced
/// to B; an invalid new setting is refused with exit 2 and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_with_a_new_api_moves_the_remaining_frames() {
    let a = Api::start().await;
    let b = Api::start().await;
    let case = Case::new("cli-settings-retry-api");
    let run = case.submit(&a.url, &["--preset", "ultrafast"]).await;
    let stats = a.stats.clone();
    let interrupt = async move {
        while stats.enhance_calls() < 20 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    assert!(matches!(
        case.drive(run, interrupt).await,
        DriveOutcome::Interrupted
    ));
    let done_at_a = case.items(run, "frame", Some(ItemStatus::Completed)).await;
    let a_requests = a.requests();

    let bad = case
        .idempipe(&[
            "retry",
            &run.to_string(),
            "--api",
            &b.url,
            "--preset",
            "Slow",
        ])
        .await;
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("did you mean slow?"),
        "{}",
        stderr(&bad)
    );
    let store = case.store().await;
    let params = store.run_get(run).await.unwrap().params;
    assert_eq!(
        params["settings"]["provider"],
        a.url.as_str(),
        "refused: unchanged"
    );

    let retry = case
        .idempipe(&["retry", &run.to_string(), "--api", &b.url])
        .await;
    let said = stdout(&retry);
    assert_eq!(retry.status.code(), Some(0), "{said}{}", stderr(&retry));
    assert!(
        said.contains(&format!("run {run}: api {} -> {}", a.url, b.url))
            && said.contains(&format!("{} enhanced frame(s) kept", done_at_a.len())),
        "{said}"
    );
    let resumed = case
        .start("process", &b.url, &["--preset", "ultrafast"])
        .await;
    let err = stderr(&resumed);
    assert_eq!(resumed.status.code(), Some(0), "{err}");
    assert!(err.contains(&format!("resuming run {run}")), "{err}");
    assert_eq!(a.requests(), a_requests, "nothing more went to A");
    assert_eq!(b.stats.enhance_calls() as usize, 120 - done_at_a.len());
    for key in &done_at_a {
        assert!(
            !b.keys().contains(&idempotency_key(run, "frame", key)),
            "{key} was done at A"
        );
    }
    let params = store.run_get(run).await.unwrap().params;
    assert_eq!(params["settings"]["provider"], b.url.as_str());
    assert_eq!(params["settings"]["preset"], "ultrafast");
}
