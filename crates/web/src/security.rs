//! Who may talk to the dashboard: the bind check, the access token (header, or a cookie
//! set by a `?token=` login), DNS-rebinding protection, and the cross-site guard on
//! actions.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};

use crate::error::{ApiError, WebError};
use crate::state::AppState;

/// Cookie holding the token after a `?token=` login.
pub const TOKEN_COOKIE: &str = "idempipe_token";

/// Header every action must carry. A cross-site HTML form cannot set it, and a
/// cross-site `fetch` that sets it needs a CORS preflight this server never grants.
pub const ACTION_HEADER: &str = "x-idempipe-action";

/// Refuses an address other machines can reach unless a token is set.
pub fn check_bind(addr: SocketAddr, token: Option<&str>) -> Result<(), WebError> {
    if addr.ip().to_canonical().is_loopback() || token.is_some() {
        Ok(())
    } else {
        Err(WebError::TokenRequired { addr })
    }
}

/// Middleware in front of every route.
///
/// With a token: the request must carry it (`Authorization: Bearer`, or the cookie); a
/// GET with `?token=T` sets the cookie and redirects to the same URL without it.
/// Without a token (loopback only): the `Host` must be a loopback name, so a page on
/// another site cannot reach the dashboard by pointing its own name at 127.0.0.1.
pub(crate) async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match state.token() {
        None => {
            if !host_is_loopback(request.headers()) {
                return refuse(
                    &request,
                    ApiError::forbidden(
                        "this dashboard has no access token, so it only answers requests \
                         addressed to localhost/127.0.0.1; set --token to serve other names",
                    ),
                );
            }
        }
        Some(token) => {
            if request.method() == Method::GET
                && let Some(given) = query_token(request.uri())
            {
                return login(&request, token, &given);
            }
            let presented = bearer(request.headers()).or_else(|| cookie(request.headers()));
            if !presented.is_some_and(|p| same(p.as_bytes(), token.as_bytes())) {
                return refuse(
                    &request,
                    ApiError::unauthorized(
                        "this dashboard needs its access token: open it once with ?token=TOKEN, \
                         or send `Authorization: Bearer TOKEN`",
                    ),
                );
            }
        }
    }
    next.run(request).await
}

/// Middleware in front of actions: the action header, and no cross-site origin.
pub(crate) async fn action_guard(request: Request, next: Next) -> Response {
    match cross_site_reason(request.headers()) {
        Some(why) => ApiError::forbidden(why).into_response(),
        None => next.run(request).await,
    }
}

/// Why an action request looks cross-site, if it does.
fn cross_site_reason(headers: &HeaderMap) -> Option<String> {
    if !headers.contains_key(ACTION_HEADER) {
        return Some(format!(
            "actions need the header `{ACTION_HEADER}: 1` (it protects against cross-site requests)"
        ));
    }
    if let Some(site) = header_str(headers, "sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return Some(format!(
            "cross-site action refused (Sec-Fetch-Site: {site})"
        ));
    }
    if let Some(origin) = header_str(headers, header::ORIGIN.as_str()) {
        let host = header_str(headers, header::HOST.as_str()).unwrap_or("");
        let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or("");
        if origin_host.is_empty() || !origin_host.eq_ignore_ascii_case(host) {
            return Some(format!(
                "cross-site action refused (Origin {origin} is not this dashboard)"
            ));
        }
    }
    None
}

fn login(request: &Request, token: &str, given: &str) -> Response {
    if !same(given.as_bytes(), token.as_bytes()) {
        return refuse(request, ApiError::unauthorized("wrong access token"));
    }
    let uri = request.uri();
    let rest: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("token="))
        .collect();
    let location = if rest.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{}", uri.path(), rest.join("&"))
    };
    // Lax, not Strict: a link from elsewhere still opens the dashboard; actions stay
    // safe because they need the action header.
    let cookie = format!("{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Lax; Path=/");
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, location), (header::SET_COOKIE, cookie)],
    )
        .into_response()
}

/// A refusal as JSON for the API and metrics, as a short page for people.
fn refuse(request: &Request, error: ApiError) -> Response {
    let path = request.uri().path();
    if path.starts_with("/api/") || path == "/metrics" {
        return error.into_response();
    }
    let page = maud::html! {
        (maud::DOCTYPE)
        html { head { title { "idempipe" } } body { h1 { "idempipe" } p { (error.message) } } }
    };
    (error.status, Html(page.into_string())).into_response()
}

fn query_token(uri: &axum::http::Uri) -> Option<String> {
    uri.query()?
        .split('&')
        .find_map(|p| p.strip_prefix("token="))
        .map(percent_decode)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    header_str(headers, header::AUTHORIZATION.as_str())?.strip_prefix("Bearer ")
}

fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(TOKEN_COOKIE)?.strip_prefix('='))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether the `Host` header names this machine.
fn host_is_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = header_str(headers, header::HOST.as_str()) else {
        // HTTP/1.0 without Host: not a browser, so not a rebinding attack.
        return true;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    let name = name.to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Decodes `%XX` escapes and `+` (a token pasted into a URL may be escaped).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_binds_need_no_token() {
        assert!(check_bind("127.0.0.1:1".parse().unwrap(), None).is_ok());
        assert!(check_bind("[::1]:1".parse().unwrap(), None).is_ok());
        assert!(check_bind("0.0.0.0:1".parse().unwrap(), None).is_err());
        assert!(check_bind("0.0.0.0:1".parse().unwrap(), Some("t")).is_ok());
    }

    #[test]
    fn hosts_and_escapes() {
        let mut h = HeaderMap::new();
        for (host, ok) in [
            ("localhost:8090", true),
            ("127.0.0.1:8090", true),
            ("[::1]:8090", true),
            ("evil.example:8090", false),
            ("10.0.0.1", false),
        ] {
            h.insert(header::HOST, host.parse().unwrap());
            assert_eq!(host_is_loopback(&h), ok, "{host}");
        }
        assert_eq!(percent_decode("a%2Fb+c%"), "a/b c%");
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"ab", b"abc"));
    }
}
