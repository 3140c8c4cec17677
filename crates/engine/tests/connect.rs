//! Opening a database: a mistyped `--db` is refused before anything is created, a
//! database that must exist is never created, and an unreachable PostgreSQL fails fast
//! with its cause said once.

use std::time::Duration;

use idempipe_engine::{OpenMode, StoreError, connect, connect_with};
use idempipe_testkit::TempDir;

#[tokio::test]
async fn mistyped_urls_are_refused_saying_what_is_accepted() {
    let dir = TempDir::new("connect-typos");
    let notes = dir.join("notes.txt").display().to_string();
    for url in [
        "postgres:/bad",
        "postgresql:bad",
        "postgress://postgres@127.0.0.1/x",
        "mysql://x",
        notes.as_str(),
    ] {
        match connect(url).await {
            Err(e @ StoreError::BadUrl { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains(url) && text.contains("postgres://") && text.contains(".db"),
                    "{text}"
                );
            }
            other => panic!("{url:?}: expected BadUrl, got {other:?}"),
        }
    }
    assert!(!dir.join("notes.txt").exists());

    // An existing file that is not SQLite is not overwritten or opened.
    let text_file = dir.join("state.db");
    std::fs::write(&text_file, "my notes, not a database").unwrap();
    let err = connect(&text_file.display().to_string()).await.unwrap_err();
    assert!(err.to_string().contains("not a SQLite database"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&text_file).unwrap(),
        "my notes, not a database"
    );
}

#[tokio::test]
async fn a_database_that_must_exist_is_never_created() {
    let dir = TempDir::new("connect-must-exist");
    let missing = dir.join("sub/missing.db");
    let url = missing.display().to_string();
    match connect_with(&url, OpenMode::MustExist).await {
        Err(StoreError::NoDatabase { path }) => assert_eq!(path, url),
        other => panic!("expected NoDatabase, got {other:?}"),
    }
    assert!(!dir.join("sub").exists(), "the directory was created");

    // An empty file (e.g. `touch state.db`) holds no database either: not migrated.
    let empty = dir.join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let err = connect_with(&empty.display().to_string(), OpenMode::MustExist)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NoDatabase { .. }), "{err:?}");
    assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);

    // Once created, it opens; `sqlite://` and a name without extension both name it.
    let made = dir.join("made.db").display().to_string();
    let store = connect(&made).await.unwrap();
    let run_count = store.run_list(10).await.unwrap().len();
    drop(store);
    assert_eq!(run_count, 0);
    connect_with(&made, OpenMode::MustExist).await.unwrap();
    connect_with(&format!("sqlite://{made}"), OpenMode::MustExist)
        .await
        .unwrap();
    let renamed = dir.join("made-state");
    std::fs::copy(&made, &renamed).unwrap();
    connect_with(&renamed.display().to_string(), OpenMode::MustExist)
        .await
        .unwrap();
}

#[tokio::test]
async fn unreachable_postgres_fails_fast_with_the_cause_once() {
    let port = idempipe_testkit::free_port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/x");
    let result = tokio::time::timeout(Duration::from_secs(8), connect(&url))
        .await
        .expect("connecting to a closed port took more than 8 s");
    let err = result.unwrap_err();
    assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert_eq!(
        text.to_lowercase().matches("connection refused").count(),
        1,
        "{text}"
    );
}

/// A dropped store ends its PostgreSQL sessions, the LISTEN session included: a program
/// that opens stores one after another does not pile up connections.
#[tokio::test]
async fn dropped_postgres_store_ends_its_sessions() {
    let db = idempipe_testkit::TestDb::postgres().await;
    let name = format!("idempipe-drop-{}", std::process::id());
    let url = format!("{}&application_name={name}", db.url);
    let admin = sqlx::PgPool::connect(&db.url).await.unwrap();
    let sessions = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
        )
        .bind(&name)
        .fetch_one(&admin)
        .await
        .unwrap()
    };
    for _ in 0..3 {
        let store = connect(&url).await.unwrap();
        store.run_list(1).await.unwrap();
        // The LISTEN session is opened in the background: wait until it is there.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sessions().await < 2 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            sessions().await >= 2,
            "the store and its LISTEN session are open"
        );
        drop(store);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sessions().await > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(sessions().await, 0, "a dropped store's sessions end");
    }
}
