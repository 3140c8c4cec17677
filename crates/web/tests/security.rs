//! Who may reach the dashboard, and what it may serve: the token, the cross-site guard
//! on actions, DNS rebinding, non-loopback binds, and files outside the artifact roots.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{TOKEN, TestDb, action, fixture, get, json_of, send, state, write_frame};
use idempipe_web::{AppState, WebError, router, serve};
use serde_json::json;

fn with(mut request: Request<Body>, name: &'static str, value: &str) -> Request<Body> {
    request.headers_mut().insert(name, value.parse().unwrap());
    request
}

fn without(mut request: Request<Body>, name: &'static str) -> Request<Body> {
    request.headers_mut().remove(name);
    request
}

#[tokio::test]
async fn refuses_a_public_address_without_a_token() {
    let db = TestDb::sqlite();
    let store = db.store().await;
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let state = AppState::builder(store.clone()).build().unwrap();
    let err = serve(listener, state, std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, WebError::TokenRequired { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("--token") && message.contains("IDEMPIPE_TOKEN"),
        "{message}"
    );

    // With a token it serves, and without one on loopback too.
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let state = AppState::builder(store.clone())
        .token(Some(TOKEN.into()))
        .build()
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state, async move {
        let _ = rx.await;
    }));
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    tx.send(()).unwrap();
    server.await.unwrap().unwrap();

    let short = AppState::builder(store).token(Some("short".into())).build();
    assert!(matches!(short, Err(WebError::BadToken(_))));
}

async fn token_is_required_everywhere(db: TestDb) {
    let store = db.store().await;
    let fx = fixture(&store, db.dir.path()).await;
    let app = router(state(&store, db.dir.path(), Some(TOKEN)));
    let run = format!("/api/runs/{}", fx.run);

    for uri in ["/", "/api/runs", run.as_str(), "/metrics", "/assets/app.js"] {
        let (status, _) = send(&app, get(uri)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
    }
    let bearer = |uri: &str| with(get(uri), "authorization", &format!("Bearer {TOKEN}"));
    let (status, _) = send(&app, bearer(&run)).await;
    assert_eq!(status, StatusCode::OK);
    let wrong = with(get(&run), "authorization", "Bearer not-the-token-at-all");
    assert_eq!(send(&app, wrong).await.0, StatusCode::UNAUTHORIZED);

    // Login: ?token= sets the cookie and redirects without the token in the URL.
    let (status, response) = send(&app, get(&format!("/runs/{}?token={TOKEN}&x=1", fx.run))).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        response.headers()["location"],
        format!("/runs/{}?x=1", fx.run)
    );
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    let (status, _) = send(
        &app,
        with(get(&format!("/runs/{}", fx.run)), "cookie", pair),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(&app, get("/?token=wrong-token-wrong-token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Actions need the token even on loopback.
    let (status, body) = json_of(&app, action(&format!("{run}/cancel"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let authed = with(action(&format!("{run}/pause")), "cookie", pair);
    let (status, body) = json_of(&app, authed).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(store.run_get(fx.run).await.unwrap().paused);
}

async fn actions_refuse_cross_site_requests(db: TestDb) {
    let store = db.store().await;
    let fx = fixture(&store, db.dir.path()).await;
    let app = router(state(&store, db.dir.path(), None));
    let uri = format!("/api/runs/{}/cancel", fx.run);

    let refused = [
        (
            "no action header",
            without(action(&uri), "x-idempipe-action"),
        ),
        (
            "cross-site fetch",
            with(action(&uri), "sec-fetch-site", "cross-site"),
        ),
        (
            "same-site fetch",
            with(action(&uri), "sec-fetch-site", "same-site"),
        ),
        (
            "foreign origin",
            with(action(&uri), "origin", "http://evil.example"),
        ),
        ("null origin", with(action(&uri), "origin", "null")),
        (
            "rebound host",
            with(action(&uri), "host", "evil.example:8090"),
        ),
    ];
    for (what, request) in refused {
        let (status, body) = json_of(&app, request).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {body}");
    }
    // GET cannot act.
    let (status, _) = send(&app, get(&uri)).await;
    assert!(status == StatusCode::FORBIDDEN || status == StatusCode::METHOD_NOT_ALLOWED);
    // Reading through a rebound name is refused too (no token: loopback names only).
    let (status, _) = send(&app, with(get("/api/runs"), "host", "evil.example")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        store.run_get(fx.run).await.unwrap().status.as_str(),
        "running"
    );

    // The page's own request passes; a non-browser client without Origin passes too.
    let plain = without(without(action(&uri), "origin"), "sec-fetch-site");
    let (status, body) = json_of(&app, plain).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn files_cannot_escape_the_artifact_root(db: TestDb) {
    let store = db.store().await;
    let fx = fixture(&store, db.dir.path()).await;
    let outside = common::TempDir::new("outside");
    let secret = outside.path().join("secret.rgb");
    write_frame(&secret, 2, 2, [9, 9, 9]);
    // Only the artifact directory is allowed (the fixture files are in it).
    let state = AppState::builder(store.clone())
        .artifact_roots(vec![fx.artifacts.clone()])
        .build()
        .unwrap();
    let app = router(state);
    let base = format!("/api/runs/{}/frames", fx.run);

    // `..` in the key is refused before any lookup, raw or encoded.
    for key in [
        "frame/../../etc/passwd",
        "frame%2F..%2F..%2Fetc%2Fpasswd",
        "..%2F000000",
    ] {
        let (status, _) = send(&app, get(&format!("{base}/{key}/original.png"))).await;
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND,
            "{key}: {status}"
        );
    }

    // Items whose stored paths point outside: directly, through `..`, through a symlink.
    let link_dir = fx.artifacts.join("run-x/frames/00000");
    std::os::unix::fs::symlink(&secret, link_dir.join("link.rgb")).unwrap();
    std::os::unix::fs::symlink(outside.path(), fx.artifacts.join("escape")).unwrap();
    let evil = [
        ("frame/evil-abs", secret.clone()),
        (
            "frame/evil-dots",
            fx.artifacts
                .join("../../")
                .join(outside.path().strip_prefix("/").unwrap())
                .join("secret.rgb"),
        ),
        ("frame/evil-link", link_dir.join("link.rgb")),
        (
            "frame/evil-dir-link",
            fx.artifacts.join("escape/secret.rgb"),
        ),
    ];
    let items = evil
        .iter()
        .map(|(key, path)| {
            idempipe_engine::NewItem::new(
                "frame",
                *key,
                json!({ "original": path, "enhanced": path }),
            )
        })
        .collect::<Vec<_>>();
    store.item_insert(fx.run, &items, 0).await.unwrap();
    for (key, _) in &evil {
        let (status, body) = json_of(&app, get(&format!("{base}/{key}/original.png"))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{key}: {body}");
    }
    // The legitimate frame still works.
    let (status, _) = send(&app, get(&format!("{base}/frame/000000/original.png"))).await;
    assert_eq!(status, StatusCode::OK);

    // The thumbnail and output of the fixture live outside the artifact root: refused.
    std::fs::write(fx.root.join("out/out.thumb.jpg"), b"jpeg").unwrap();
    let (status, _) = send(&app, get(&format!("/api/runs/{}/thumbnail", fx.run))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

async fn output_is_served_with_ranges(db: TestDb) {
    let store = db.store().await;
    let fx = fixture(&store, db.dir.path()).await;
    let app = router(state(&store, db.dir.path(), None));
    let bytes: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    std::fs::write(fx.root.join("out/out.mp4"), &bytes).unwrap();
    let uri = format!("/api/runs/{}/output", fx.run);
    let (status, response) = send(&app, with(get(&uri), "range", "bytes=100-199")).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(response.headers()["content-type"], "video/mp4");
    assert_eq!(response.headers()["content-range"], "bytes 100-199/10000");
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&body[..], &bytes[100..200]);
    let (status, _) = send(&app, get(&format!("/api/runs/{}/thumbnail", fx.run))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

backend_tests!(
    token_is_required_everywhere,
    actions_refuse_cross_site_requests,
    files_cannot_escape_the_artifact_root,
    output_is_served_with_ranges,
);
