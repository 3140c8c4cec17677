//! Router tests without a socket (`tower::ServiceExt::oneshot`).

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use idempipe_enhance::server::{ErrorBody, ServerState};
use idempipe_enhance::{ServerConfig, router};
use tower::ServiceExt;

fn app() -> axum::Router {
    router(ServerState::new(ServerConfig::default()).unwrap())
}

async fn send(req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let resp = app().oneshot(req).await.unwrap();
    let status = resp.status();
    (
        status,
        to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec(),
    )
}

#[tokio::test]
async fn healthz_says_ok() {
    let (status, body) = send(Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, b"ok".as_slice())
    );
}

#[tokio::test]
async fn unknown_route_is_json_404() {
    let (status, body) = send(Request::get("/v2/nothing").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        serde_json::from_slice::<ErrorBody>(&body).unwrap().error,
        "not_found"
    );
}

#[tokio::test]
async fn missing_content_type_is_400() {
    let req = Request::post("/v1/enhance").body(Body::from("x")).unwrap();
    let (status, body) = send(req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        serde_json::from_slice::<ErrorBody>(&body).unwrap().error,
        "unsupported_format"
    );
}

#[test]
fn bad_config_is_refused_naming_the_field() {
    let err = ServerState::new(ServerConfig {
        max_body_bytes: 0,
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(err.field, "max_body_bytes");
}
