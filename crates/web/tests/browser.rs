//! End to end in a real headless chromium: a real video is processed with a flaky
//! enhancement server so that some frames die; the run page shows the grid and the
//! failure groups; after the server recovers, pressing retry (and confirming) finishes
//! the run while the page updates itself over server-sent events, without reloading.
//! Saves a screenshot to target/test-artifacts/dashboard.png.

#[path = "browser/cdp.rs"]
mod cdp;
mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cdp::Browser;
use common::{TOKEN, TempDir};
use idempipe_engine::{
    Backoff, Maintenance, MaintenanceConfig, RunStatus, SharedStore, Worker, WorkerConfig, connect,
};
use idempipe_enhance::server::{ServerConfig, ServerState, serve_with_state};
use idempipe_video::pipeline::{
    PipelineOptions, ProcessRequest, Settings, register, start_or_resume,
};
use idempipe_web::{AppState, serve};
use tokio::sync::{oneshot, watch};

/// A small real video: 120 frames of 176x144.
fn sample() -> std::path::PathBuf {
    idempipe_testkit::media("carphone_pristine.mp4")
}

/// The project's enhancement server on `addr`; the sender stops it.
async fn enhancement_server(
    addr: SocketAddr,
    failure_rate: f64,
) -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = ServerState::new(ServerConfig {
        failure_rate,
        failure_seed: 7,
        ..ServerConfig::default()
    })
    .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        serve_with_state(listener, state, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (addr, stop, task)
}

/// A worker and maintenance serving every video run until `stop` turns true.
fn start_workers(store: &SharedStore, stop: &watch::Receiver<bool>) {
    let options = PipelineOptions {
        frame_max_attempts: 2,
        frame_lease: Duration::from_secs(5),
        lease: Duration::from_secs(10),
        frame_backoff: Backoff {
            base: Duration::from_millis(50),
            cap: Duration::from_millis(200),
            jitter: 0.5,
        },
        ..PipelineOptions::default()
    };
    let config = WorkerConfig {
        concurrency: 4,
        ..WorkerConfig::default()
    };
    let worker = register(Worker::new(store.clone(), config), store.clone(), &options);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    tokio::spawn(worker.run(stopped(stop.clone())));
    let maintenance = Maintenance::new(
        store.clone(),
        MaintenanceConfig {
            interval: Duration::from_millis(100),
            retain: None,
        },
    );
    tokio::spawn(maintenance.run(stopped(stop.clone())));
}

async fn wait_until_finished(store: &SharedStore, run: i64, timeout: Duration) -> RunStatus {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let status = store.run_get(run).await.unwrap().status;
        if status != RunStatus::Running {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {run} still running after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn artifact_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("test-artifacts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_from_the_dashboard_finishes_a_run_live() {
    let dir = TempDir::new("browser");
    let store = connect(&dir.path().join("state.db").display().to_string())
        .await
        .unwrap();

    // Half the calls fail with 503 and a frame gets two attempts: about a quarter die.
    let (api, stop_flaky, flaky) = enhancement_server("127.0.0.1:0".parse().unwrap(), 0.5).await;
    let request = ProcessRequest {
        input: sample(),
        output: dir.path().join("out.mp4"),
        artifacts: dir.path().join("artifacts"),
        settings: Settings {
            provider: format!("http://{api}"),
            preset: "ultrafast".into(),
            segment_secs: 1.0,
            window: 2,
            ..Settings::default()
        },
    };
    let run = start_or_resume(&store, &request).await.unwrap().run_id;
    let (stop_tx, stop_rx) = watch::channel(false);
    start_workers(&store, &stop_rx);
    let status = wait_until_finished(&store, run, Duration::from_secs(240)).await;
    assert_eq!(
        status,
        RunStatus::Failed,
        "some frames die against the flaky server"
    );
    let dead: i64 = store
        .item_counts(run)
        .await
        .unwrap()
        .iter()
        .filter(|c| c.stage == "frame" && c.status == "dead")
        .map(|c| c.count)
        .sum();
    assert!(dead > 0);

    // The dashboard, with a token: the browser logs in through ?token=.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let web = listener.local_addr().unwrap();
    let state = AppState::builder(store.clone())
        .token(Some(TOKEN.into()))
        .tick(Duration::from_millis(300))
        .build()
        .unwrap();
    let (stop_web, web_stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state, async move {
        let _ = web_stopped.await;
    }));

    let profile = TempDir::new("chromium-profile");
    let browser = Browser::launch(profile.path()).await;
    browser
        .goto(&format!("http://{web}/runs/{run}?token={TOKEN}"))
        .await;
    let long = Duration::from_secs(20);
    browser
        .wait_for(
            "document.querySelector('#run')?.dataset.live === 'open'",
            long,
        )
        .await;
    let shown_dead = browser
        .eval("document.querySelectorAll('#grid .cell.s-dead').length")
        .await;
    assert_eq!(
        shown_dead.as_i64(),
        Some(dead),
        "one red cell per dead frame"
    );
    let failures = browser
        .eval("document.getElementById('failure-rows').textContent")
        .await;
    let failures = failures.as_str().unwrap();
    assert!(
        failures.contains("transient") && failures.contains("503"),
        "{failures}"
    );
    assert_eq!(
        browser
            .eval("document.getElementById('run-status').textContent")
            .await,
        "failed"
    );

    // The run has ended: no stage offers pause or resume, nor does the header.
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#stage-rows button[data-action=pause], #stage-rows button[data-action=resume]').length")
            .await,
        0,
        "a finished stage offers no pause"
    );
    assert_eq!(
        browser
            .eval("document.querySelector('.actions button[data-action=pause]').hidden")
            .await,
        true
    );

    // Before and after of one frame, side by side: while the run is unfinished they come
    // from its frame files or segments.
    let both_loaded = |frame: u64| {
        format!(
            "(() => {{ const b = document.getElementById('compare-before'), a = document.getElementById('compare-after');              return [b, a].every((i) => i.complete && i.naturalWidth === 176 && i.src.includes('/compare/{frame}/')); }})()"
        )
    };
    let first = browser
        .eval("Number(document.getElementById('compare-frame').value)")
        .await
        .as_u64()
        .unwrap();
    browser.wait_for(&both_loaded(first), long).await;

    // A dead cell opens its attempts, errors and original frame.
    browser
        .eval("document.querySelector('#grid .cell.s-dead').click()")
        .await;
    browser
        .wait_for(
            "(() => { const d = document.getElementById('detail'); const img = d.querySelector('img[alt=original]'); \
             return !d.hidden && d.textContent.includes('2 attempt(s)') && !!img && img.complete && img.naturalWidth === 176; })()",
            long,
        )
        .await;

    // The service recovers; retry from the page, confirming in the dialog.
    stop_flaky.send(()).unwrap();
    flaky.await.unwrap();
    let (_, _stop_healthy, _healthy) = enhancement_server(api, 0.0).await;
    browser.eval("window.__sameDocument = true").await;
    browser
        .eval("document.querySelector('.actions button[data-action=retry]').click()")
        .await;
    browser
        .wait_for("document.getElementById('confirm').open", long)
        .await;
    browser
        .eval("document.getElementById('confirm-ok').click()")
        .await;
    browser
        .wait_for(
            "document.getElementById('toast').textContent.includes('made due again')",
            long,
        )
        .await;
    let toast = browser
        .eval("document.getElementById('toast').textContent")
        .await;
    assert!(
        toast
            .as_str()
            .unwrap()
            .starts_with(&format!("{dead} item(s)")),
        "{toast}"
    );

    // The page follows the run to its end by itself.
    browser
        .wait_for(
            "document.getElementById('run-status').textContent === 'completed' \
             && document.querySelectorAll('#grid .cell').length === 120 \
             && document.querySelectorAll('#grid .cell.s-completed').length === 120 \
             && !!document.querySelector('#player video') && !!document.querySelector('#thumb img')",
            Duration::from_secs(240),
        )
        .await;
    assert_eq!(
        browser.eval("window.__sameDocument === true").await,
        true,
        "the page never reloaded"
    );
    assert_eq!(
        store.run_get(run).await.unwrap().status,
        RunStatus::Completed
    );
    browser
        .wait_for(
            "document.querySelector('#thumb img').naturalWidth > 0",
            long,
        )
        .await;

    // Finished: the frame picker shows another frame, now from the input and the output.
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#stage-rows button[data-action=pause]').length")
            .await,
        0
    );
    let picked = if first == 7 { 8 } else { 7 };
    browser
        .eval(&format!(
            "(() => {{ const i = document.getElementById('compare-frame'); i.value = '{picked}';              i.dispatchEvent(new Event('change')); return true; }})()"
        ))
        .await;
    browser.wait_for(&both_loaded(picked), long).await;
    let differ = browser
        .eval(
            "(() => { const px = (img) => { const c = document.createElement('canvas'); c.width = 176; c.height = 144;              const g = c.getContext('2d'); g.drawImage(img, 0, 0); return g.getImageData(0, 0, 176, 144).data; };              const b = px(document.getElementById('compare-before')), a = px(document.getElementById('compare-after'));              let d = 0; for (let i = 0; i < b.length; i++) d += Math.abs(b[i] - a[i]); return d / b.length; })()",
        )
        .await;
    assert!(
        differ.as_f64().unwrap() > 0.5,
        "the enhanced frame differs from the original: mean abs difference {differ}"
    );

    let out = artifact_dir();
    std::fs::create_dir_all(&out).unwrap();
    let png = browser.screenshot().await;
    assert_eq!(&png[1..4], b"PNG");
    std::fs::write(out.join("dashboard.png"), png).unwrap();
    eprintln!("screenshot: {}", out.join("dashboard.png").display());

    drop(browser);
    stop_web.send(()).unwrap();
    server.await.unwrap().unwrap();
    stop_tx.send(true).unwrap();
}
