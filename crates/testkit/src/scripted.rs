//! An HTTP server on loopback that answers every request with whatever the test set
//! last: any status, headers and body, for fuzzing the clients' response handling.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// One scripted answer.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// HTTP status (200..=599).
    pub status: u16,
    /// Header lines; invalid names or values are skipped.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

/// The server; it stops with the test's runtime.
#[derive(Debug, Clone)]
pub struct ScriptedServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    answer: Arc<Mutex<Answer>>,
}

impl ScriptedServer {
    /// Starts answering `200` with an empty body.
    pub async fn start() -> Self {
        let answer = Arc::new(Mutex::new(Answer {
            status: 200,
            ..Answer::default()
        }));
        let current = answer.clone();
        let app = axum::Router::new().fallback(move |body: Bytes| {
            let current = current.clone();
            async move {
                drop(body);
                let answer = current.lock().expect("answer lock").clone();
                respond(answer)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr: SocketAddr = listener.local_addr().expect("local address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{addr}"),
            answer,
        }
    }

    /// Answers every following request with `answer`.
    pub fn set(&self, answer: Answer) {
        *self.answer.lock().expect("answer lock") = answer;
    }
}

fn respond(answer: Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut response = (status, answer.body).into_response();
    for (name, value) in answer.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(&value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}
