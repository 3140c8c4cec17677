//! Property tests of every path and query string the dashboard reads: paths built from
//! its own segments mixed with traversal attempts (`..`, `%2e%2e`, `%2F`, `%00`,
//! backslashes), absurd ids and non-ASCII; query strings of its parameters with any
//! values. Through the router, on SQLite.
//!
//! Whatever arrives: no 5xx; every `/api` error is the JSON `{error, message}`; a file
//! (frame, thumbnail, video) is served only at one of its real addresses.

mod common;

use axum::http::{StatusCode, Uri};
use common::{TestDb, fixture, get, send, state, text, write_frame};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

const SEGMENTS: &[&str] = &[
    "api",
    "runs",
    "{run}",
    "{run}",
    "frames",
    "frame",
    "000000",
    "original.png",
    "enhanced.png",
    "items",
    "attempts",
    "compare",
    "0",
    "before.png",
    "after.png",
    "thumbnail",
    "output",
    "assets",
    "app.js",
    "style.css",
    "metrics",
    "stages",
    "failures",
    "..",
    ".",
    "%2e%2e",
    "%2E%2E%2F",
    "%2F",
    "..%2F..%2Fetc%2Fpasswd",
    "%00",
    "%ZZ",
    "\\..\\",
    "-1",
    "0",
    "99999999999999999999",
    "1e3",
    "%C3%BC",
    "a%20b",
    "",
    "secret.rgb",
];

const QUERY_CHARS: &[char] = &[
    'a', 'd', 'e', 'f', 'g', 'i', 'l', 'm', 'r', 's', 't', 'u', 'n', '0', '1', '9', '-', ',', '=',
    '&', '%', '2', 'C', '.', '+',
];

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(SEGMENTS), 1..7)
        .prop_map(|segments| format!("/{}", segments.join("/")))
}

fn query() -> impl Strategy<Value = String> {
    let names = prop::sample::select(vec!["limit", "after", "stage", "status", "token", "x"]);
    let values = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        prop::sample::select(vec![
            "",
            "frame",
            "failed,dead",
            "running,",
            "bogus",
            "-1",
            "1e99",
            "%FF",
            "%00",
        ])
        .prop_map(str::to_string),
        prop::collection::vec(prop::sample::select(QUERY_CHARS), 0..30)
            .prop_map(|c| c.into_iter().collect()),
    ];
    prop::collection::vec((names, values), 0..4).prop_map(|pairs| {
        pairs
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    })
}

/// The addresses where files may legitimately be served for the fixture's run.
fn file_addresses(run: i64) -> Vec<String> {
    vec![
        format!("/api/runs/{run}/frames/frame/000000/original.png"),
        format!("/api/runs/{run}/frames/frame/000000/enhanced.png"),
        format!("/api/runs/{run}/frames/frame%2F000000/original.png"),
        format!("/api/runs/{run}/frames/frame%2F000000/enhanced.png"),
        format!("/api/runs/{run}/frames/frame/000007/original.png"),
        format!("/api/runs/{run}/frames/frame%2F000007/original.png"),
        format!("/api/runs/{run}/compare/0/before.png"),
        format!("/api/runs/{run}/compare/0/after.png"),
        format!("/api/runs/{run}/compare/7/before.png"),
    ]
}

/// One request: the answer must be safe (see the module docs).
async fn check(
    app: &axum::Router,
    run: i64,
    path: String,
    query: String,
) -> Result<(), TestCaseError> {
    let path = path.replace("{run}", &run.to_string());
    let uri = if query.is_empty() {
        path.clone()
    } else {
        format!("{path}?{query}")
    };
    let Ok(uri) = uri.parse::<Uri>() else {
        return Ok(());
    };
    let (status, response) = send(app, get(&uri.to_string())).await;
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    prop_assert!(!status.is_server_error(), "{uri}: {status}");
    if content_type.starts_with("text/event-stream") {
        return Ok(());
    }
    let body = text(response).await;
    if path.starts_with("/api/") && status != StatusCode::OK {
        let json: serde_json::Value = serde_json::from_str(&body).map_err(|e| {
            TestCaseError::fail(format!("{uri}: {status} body is not JSON ({e}): {body}"))
        })?;
        prop_assert!(
            json["error"].is_string() && json["message"].is_string(),
            "{uri}: {body}"
        );
    }
    let is_file = ["image/", "video/"]
        .iter()
        .any(|p| content_type.starts_with(p));
    if status == StatusCode::OK && is_file {
        prop_assert!(file_addresses(run).contains(&path), "{uri} served a file");
    }
    Ok(())
}

#[test]
fn any_path_and_query_gets_a_safe_answer() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = TestDb::sqlite();
    let (app, run) = rt.block_on(async {
        let store = db.store().await;
        let fx = fixture(&store, db.dir.path()).await;
        // A frame file outside the artifact root, as bait.
        write_frame(&db.dir.path().join("secret.rgb"), 2, 2, [9, 9, 9]);
        (
            idempipe_web::router(state(&store, &fx.artifacts, None)),
            fx.run,
        )
    });
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 600,
        ..ProptestConfig::default()
    });
    runner
        .run(&(path(), query()), |(path, query)| {
            rt.block_on(check(&app, run, path, query))
        })
        .unwrap();
}
