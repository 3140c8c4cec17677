//! The chaos suite's server features over real HTTP: the per-key ledger, answers held past
//! the client's timeout, and 200s with a garbage body.

mod common;

use std::time::Duration;

use common::{encoded, small_frame, start_server};
use idempipe_enhance::server::{KeyCount, KeyLedgerSnapshot};
use idempipe_enhance::{ImageFormat, ServerConfig, codec};
use reqwest::Client;

fn client(timeout: Duration) -> Client {
    idempipe_enhance::provider::tls::install_crypto_provider();
    Client::builder().timeout(timeout).build().unwrap()
}

async fn post(client: &Client, base: &str, key: &str) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{base}/v1/enhance"))
        .header("content-type", "image/png")
        .header("idempotency-key", key)
        .body(encoded(&small_frame(), ImageFormat::Png))
        .send()
        .await
}

async fn ledger(base: &str) -> KeyLedgerSnapshot {
    let resp = client(Duration::from_secs(10))
        .get(format!("{base}/stats/keys"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn ledger_counts_enhancements_and_answers_per_key() {
    let server = start_server(ServerConfig {
        key_ledger: true,
        ..Default::default()
    })
    .await;
    let c = client(Duration::from_secs(10));
    for key in ["k1", "k1", "k2"] {
        assert_eq!(post(&c, &server.base, key).await.unwrap().status(), 200);
    }
    let ledger = ledger(&server.base).await;
    // The repeat of k1 is replayed from the idempotency cache: answered, not enhanced.
    let count = |admitted, enhanced, ok| KeyCount {
        admitted,
        enhanced,
        ok,
    };
    assert_eq!(ledger.keys["k1"], count(2, 1, 2));
    assert_eq!(ledger.keys["k2"], count(1, 1, 1));
    assert_eq!((ledger.hung, ledger.garbled), (0, 0));
}

#[tokio::test]
async fn without_a_ledger_the_route_says_how_to_get_one() {
    let server = start_server(ServerConfig::default()).await;
    let resp = client(Duration::from_secs(10))
        .get(format!("{}/stats/keys", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.text().await.unwrap().contains("--key-ledger"));
}

#[tokio::test]
async fn garbage_200_is_not_an_image_and_is_not_counted_answered() {
    let server = start_server(ServerConfig {
        key_ledger: true,
        garbage_rate: 1.0,
        ..Default::default()
    })
    .await;
    let resp = post(&client(Duration::from_secs(10)), &server.base, "g")
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await.unwrap();
    assert!(codec::decode(&body, ImageFormat::Png).is_err());
    let ledger = ledger(&server.base).await;
    let expected = KeyCount {
        admitted: 1,
        enhanced: 1,
        ok: 0,
    };
    assert_eq!(ledger.keys["g"], expected);
    assert_eq!(ledger.garbled, 1);
}

#[tokio::test]
async fn held_answer_outlasts_the_client_timeout_after_the_work_is_done() {
    let server = start_server(ServerConfig {
        key_ledger: true,
        hang_rate: 1.0,
        hang: Duration::from_secs(2),
        ..Default::default()
    })
    .await;
    let err = post(&client(Duration::from_millis(500)), &server.base, "h")
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let ledger = ledger(&server.base).await;
    assert_eq!(
        ledger.keys["h"].enhanced, 1,
        "the work was done before the hang"
    );
    assert_eq!(ledger.hung, 1);
}
