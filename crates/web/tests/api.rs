//! The JSON API, the pages and the live stream through the router, on SQLite and
//! PostgreSQL, over a run whose items were driven through the engine's store API.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::{TestDb, action, fixture, frame_key, get, json_of, send, state, text};
use http_body_util::BodyExt;
use idempipe_web::{AppState, router};

async fn runs_and_run_view(db: TestDb) {
    let store = db.store().await;
    let fx = fixture(&store, db.dir.path()).await;
    let app = router(state(&store, db.dir.path(), None));

    let (status, runs) = json_of(&app, get("/api/runs")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(runs[0]["id"], fx.run);
    assert_eq!(runs[0]["completed"], 6);
    assert_eq!(runs[0]["total"], 11);

    let (status, view) = json_of(&app, get(&format!("/api/runs/{}", fx.run))).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["run"]["status"], "running");
    let stages: Vec<&str> = view["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["ingest", "frame"]);
    let frame = &view["stages"][1];
    assert_eq!(frame["total"], 10);
    assert_eq!(frame["counts"]["completed"], 5);
    assert_eq!(frame["counts"]["failed"], 2);
    assert_eq!(frame["counts"]["dead"], 1);
    assert_eq!(frame["counts"]["running"], 1);
    assert_eq!(frame["counts"]["pending"], 1);
    assert!(frame["rate_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(view["thumbnail"], false);
    assert_eq!(view["output"], false);

    let (_, stages) = json_of(&app, get(&format!("/api/runs/{}/stages", fx.run))).await;
    assert_eq!(stages.as_array().unwrap().len(), 2);

    let (status, missing) = json_of(&app, get("/api/runs/999999")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["error"], "not_found");
}

async fn items_and_attempts(db: TestDb) {
    let store = db.store().await;
    let fx = fixture(&store, db.dir.path()).await;
    let app = router(state(&store, db.dir.path(), None));
    let base = format!("/api/runs/{}", fx.run);

    let (_, page) = json_of(
        &app,
        get(&format!("{base}/items?stage=frame&status=failed,dead")),
    )
    .await;
    let keys: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, [frame_key(5), frame_key(6), frame_key(7)]);
    assert!(page["next_after"].is_null());

    let (_, first) = json_of(&app, get(&format!("{base}/items?stage=frame&limit=4"))).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 4);
    let after = first["next_after"].as_i64().unwrap();
    let (_, second) = json_of(
        &app,
        get(&format!("{base}/items?stage=frame&limit=4&after={after}")),
    )
    .await;
    assert_eq!(second["items"][0]["key"], frame_key(4));

    let (status, bad) = json_of(&app, get(&format!("{base}/items?status=nope"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(bad["message"].as_str().unwrap().contains("nope"));

    let (status, detail) = json_of(
        &app,
        get(&format!("{base}/items/frame/frame/000007/attempts")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    assert_eq!(detail["item"]["status"], "dead");
    assert_eq!(detail["attempts"][0]["outcome"], "dead");
    assert_eq!(detail["attempts"][0]["error"]["status"], 400);
    // The key may also come percent-encoded.
    let (status, _) = json_of(
        &app,
        get(&format!("{base}/items/frame/frame%2F000005/attempts")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

async fn failures_grouped_by_kind(db: TestDb) {
    let store = db.store().await;
    let fx = fixture(&store, db.dir.path()).await;
    let app = router(state(&store, db.dir.path(), None));
    let (_, groups) = json_of(&app, get(&format!("/api/runs/{}/failures", fx.run))).await;
    let groups = groups.as_array().unwrap();
    assert_eq!(groups.len(), 2, "{groups:?}");
    assert_eq!(groups[0]["kind"], "transient");
    assert_eq!(groups[0]["http_status"], 503);
    assert_eq!(groups[0]["count"], 2);
    assert_eq!(groups[0]["example_message"], "injected failure");
    assert_eq!(groups[1]["kind"], "permanent");
    assert_eq!(groups[1]["http_status"], 400);
    assert_eq!(groups[1]["example_key"], frame_key(7));
}

async fn frames_as_png(db: TestDb) {
    let store = db.store().await;
    let fx = fixture(&store, db.dir.path()).await;
    let app = router(state(&store, db.dir.path(), None));
    let base = format!("/api/runs/{}/frames", fx.run);
    for uri in [
        format!("{base}/frame/000000/original.png"),
        format!("{base}/frame%2F000000/enhanced.png"),
    ] {
        let (status, response) = send(&app, get(&uri)).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert_eq!(response.headers()["content-type"], "image/png");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let png = image::load_from_memory(&bytes).unwrap().to_rgb8();
        assert_eq!(png.dimensions(), (4, 3));
    }
    // Frame 2 is a slot of the segment's files of frames: its own pixels, each side.
    let compare = format!("/api/runs/{}/compare/2", fx.run);
    for (uri, rgb) in [
        (format!("{base}/frame/000002/original.png"), [70, 80, 90]),
        (format!("{base}/frame/000002/enhanced.png"), [100, 110, 120]),
        (format!("{compare}/before.png"), [70, 80, 90]),
        (format!("{compare}/after.png"), [100, 110, 120]),
    ] {
        let (status, response) = send(&app, get(&uri)).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let png = image::load_from_memory(&bytes).unwrap().to_rgb8();
        assert_eq!(png.dimensions(), (4, 3));
        assert_eq!(png.get_pixel(3, 2).0, rgb, "{uri}");
    }
    // Frame 7 died: its original exists, its enhanced frame never did.
    let (status, _) = send(&app, get(&format!("{base}/frame/000007/original.png"))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(&app, get(&format!("{base}/frame/000007/enhanced.png"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(&app, get(&format!("{base}/frame/000000/other.png"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn actions_say_what_changed(db: TestDb) {
    let store = db.store().await;
    let fx = fixture(&store, db.dir.path()).await;
    let app = router(state(&store, db.dir.path(), None));
    let base = format!("/api/runs/{}", fx.run);

    let (status, r) = json_of(&app, action(&format!("{base}/retry?stage=frame"))).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["retried"], 3);
    assert_eq!(r["stage"], "frame");
    assert_eq!(r["statuses"], serde_json::json!(["failed", "dead"]));
    // A retried dead item is due again as `failed`: none is dead any more.
    let (_, again) = json_of(&app, action(&format!("{base}/retry?statuses=dead"))).await;
    assert_eq!(again["retried"], 0);
    assert_eq!(again["statuses"], serde_json::json!(["dead"]));

    let (_, p) = json_of(&app, action(&format!("{base}/pause"))).await;
    assert_eq!(p["paused"], true);
    let (_, view) = json_of(&app, get(&base)).await;
    assert_eq!(view["run"]["paused"], true);
    let (_, p) = json_of(&app, action(&format!("{base}/resume"))).await;
    assert_eq!(p["paused"], false);
    let (_, p) = json_of(&app, action(&format!("{base}/pause?stage=frame"))).await;
    assert_eq!(p["stage"], "frame");

    let (_, c) = json_of(&app, action(&format!("{base}/cancel"))).await;
    // Not final: 5, 6, 7 (failed, due now), 8 (running), 9 (pending).
    assert_eq!(c["cancelled_items"], 5);
    let (_, view) = json_of(&app, get(&base)).await;
    assert_eq!(view["run"]["status"], "cancelled");
    // A finished run is not paused or cancelled again.
    let (status, again) = json_of(&app, action(&format!("{base}/cancel"))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    let (status, _) = json_of(&app, action(&format!("{base}/pause"))).await;
    assert_eq!(status, StatusCode::CONFLICT);

    let (status, _) = json_of(&app, action("/api/runs/424242/cancel")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn pages_render(db: TestDb) {
    let store = db.store().await;
    let fx = fixture(&store, db.dir.path()).await;
    let app = router(state(&store, db.dir.path(), None));

    let (status, response) = send(&app, get("/")).await;
    assert_eq!(status, StatusCode::OK);
    let html = text(response).await;
    assert!(
        html.contains(&format!("href=\"/runs/{}\"", fx.run)),
        "{html}"
    );
    assert!(html.contains("/videos/in.mp4"));

    let (status, response) = send(&app, get(&format!("/runs/{}", fx.run))).await;
    assert_eq!(status, StatusCode::OK);
    let html = text(response).await;
    assert_eq!(
        html.matches("class=\"cell s-").count() - 8,
        10,
        "one cell per frame (plus the legend)"
    );
    assert!(html.contains("class=\"cell s-dead\" data-key=\"frame/000007\""));
    assert!(html.contains("class=\"cell s-failed\" data-key=\"frame/000005\""));
    assert!(html.contains("injected failure") && html.contains("bad image"));
    assert!(html.contains("data-action=\"retry\""));
    assert!(html.contains("<dialog id=\"confirm\""));

    for (asset, kind) in [("app.css", "text/css"), ("app.js", "text/javascript")] {
        let (status, response) = send(&app, get(&format!("/assets/{asset}"))).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind)
        );
    }
}

async fn events_stream_counts_and_cells(db: TestDb) {
    let store = db.store().await;
    let fx = fixture(&store, db.dir.path()).await;
    let state: AppState = AppState::builder(store.clone())
        .tick(Duration::from_millis(50))
        .build()
        .unwrap();
    let app = router(state.clone());
    let (status, response) = send(&app, get(&format!("/api/runs/{}/events", fx.run))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let mut seen = String::new();
    let mut next = async || {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(frame.data_ref().unwrap()).into_owned()
    };
    while !(seen.contains("event: run") && seen.contains("event: cells")) {
        seen.push_str(&next().await);
    }
    assert!(seen.contains("\"reset\":true"), "{seen}");
    assert!(seen.contains("[\"frame/000007\",\"dead\"]"), "{seen}");
    // A retry shows up as changed cells only.
    let app2 = app.clone();
    let (_, r) = json_of(&app2, action(&format!("/api/runs/{}/retry", fx.run))).await;
    assert_eq!(r["retried"], 3);
    let mut later = String::new();
    while !later.contains("event: cells") {
        later.push_str(&next().await);
    }
    assert!(later.contains("[\"frame/000007\",\"failed\"]"), "{later}");
    assert!(
        !later.contains("frame/000000"),
        "unchanged cells are not resent: {later}"
    );
    // Shutting down ends the stream.
    state.close();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match body.frame().await {
                None => break,
                Some(_) => continue,
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the stream ends on close");
}

/// A run whose files are in object storage gets no before/after view: the page says
/// why, and the image route answers 501 naming the limitation and the location.
async fn compare_refuses_runs_in_object_storage(db: TestDb) {
    let store = db.store().await;
    let fx = fixture(&store, db.dir.path()).await;
    let app = router(state(&store, db.dir.path(), None));
    let (_, response) = send(&app, get(&format!("/runs/{}", fx.run))).await;
    let html = text(response).await;
    assert!(
        html.contains("id=\"compare-before\""),
        "a local run compares"
    );

    let mut params = store.run_get(fx.run).await.unwrap().params;
    params["artifacts"] = "s3://media/jobs".into();
    params["output"] = "s3://media/out/in.mp4".into();
    store.run_set_params(fx.run, &params).await.unwrap();
    let (status, response) = send(&app, get(&format!("/runs/{}", fx.run))).await;
    assert_eq!(status, StatusCode::OK);
    let html = text(response).await;
    assert!(!html.contains("id=\"compare-before\""), "{html}");
    assert!(
        html.contains(
            "Not available: the before/after view reads frames from local artifact directories only"
        ) && html.contains("s3://media/jobs"),
        "{html}"
    );
    for side in ["before", "after"] {
        let (status, body) = json_of(
            &app,
            get(&format!("/api/runs/{}/compare/0/{side}.png", fx.run)),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{body}");
        assert_eq!(body["error"], "object_storage", "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("s3://media/jobs"),
            "{body}"
        );
    }
}

backend_tests!(
    compare_refuses_runs_in_object_storage,
    runs_and_run_view,
    items_and_attempts,
    failures_grouped_by_kind,
    frames_as_png,
    actions_say_what_changed,
    pages_render,
    events_stream_counts_and_cells,
);
