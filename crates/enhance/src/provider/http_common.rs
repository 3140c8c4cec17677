//! What every HTTP provider shares: validating a base URL into an endpoint, and
//! describing a failed request.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Client, Url};

use super::classify::{classify_status, parse_retry_after};
use super::{ProviderConfigError, ProviderError};

/// Validates `base_url` (`http[s]://host[:port][/path]`, no query or fragment) and
/// returns the URL of `path` under it, and a short provider name such as
/// `http(host:port)` or `https(host)`.
pub fn endpoint(base_url: &str, path: &str) -> Result<(Url, String), ProviderConfigError> {
    let bad = |reason: &str| ProviderConfigError::BadUrl {
        url: base_url.to_string(),
        reason: reason.to_string(),
    };
    let mut base = Url::parse(base_url)
        .map_err(|e| bad(&format!("{e}; expected e.g. http://127.0.0.1:8080")))?;
    let scheme = match base.scheme() {
        scheme @ ("http" | "https") => scheme.to_string(),
        other => {
            return Err(bad(&format!(
                "scheme {other:?} is not supported; use http:// or https://"
            )));
        }
    };
    let host = base
        .host_str()
        .ok_or_else(|| bad("it has no host"))?
        .to_string();
    if base.query().is_some() || base.fragment().is_some() {
        return Err(bad("it must not have a query or fragment"));
    }
    if !base.path().ends_with('/') {
        let with_slash = format!("{}/", base.path());
        base.set_path(&with_slash);
    }
    let url = base.join(path).map_err(|e| bad(&e.to_string()))?;
    let name = match base.port() {
        Some(port) => format!("{scheme}({host}:{port})"),
        None => format!("{scheme}({host})"),
    };
    Ok((url, name))
}

/// How long an idle pooled connection is kept: less than the servers' header read
/// timeout (`idempipe_http`'s default is 10 s), so the client drops an idle connection
/// before the server closes it, instead of racing its close with a new request.
const POOL_IDLE: Duration = Duration::from_secs(5);

/// A pooled HTTP/1 client with a whole-request `timeout` and a `connect_timeout`, that
/// follows no redirects (an API answering with one is misconfigured). HTTPS trusts the
/// system's roots and the CAs of [`super::tls::trust_ca_file`].
pub fn client(timeout: Duration, connect_timeout: Duration) -> Result<Client, ProviderConfigError> {
    super::tls::configure(Client::builder())
        .timeout(timeout)
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(POOL_IDLE)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(ProviderConfigError::Client)
}

/// A request to `url` that got no usable response: retryable, saying whether it timed
/// out (after `timeout`), could not connect, or failed otherwise, with every cause.
pub fn transport_error(url: &str, timeout: Duration, e: &reqwest::Error) -> ProviderError {
    let what = if e.is_timeout() {
        format!("timed out (limit {timeout:?}) calling {url}")
    } else if e.is_connect() {
        format!("could not connect to {url}")
    } else {
        format!("request to {url} failed")
    };
    let chain = error_chain(e);
    let hint = super::tls::certificate_hint(&chain);
    ProviderError::retryable(format!("{what}: {chain}{hint}"))
}

/// The headers and body of a 200 answer of at most `max_bytes`. Any other status
/// becomes the classified error (with `Retry-After` when sent, quoting at most the
/// first `max_bytes` of its body); a larger 200 body is [`garbled`] (nothing past the
/// limit is read, so a hostile or broken server cannot exhaust memory); a body that
/// cannot be read is a transport error.
pub async fn ok_body(
    mut response: reqwest::Response,
    url: &str,
    timeout: Duration,
    max_bytes: usize,
) -> Result<(HeaderMap, axum::body::Bytes), ProviderError> {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    // Sized once from Content-Length (never beyond the limit): no regrowth and no copy
    // of a multi-megabyte frame while it arrives.
    let declared = response.content_length().unwrap_or(0);
    let mut body = Vec::with_capacity(
        usize::try_from(declared)
            .unwrap_or(max_bytes)
            .min(max_bytes),
    );
    let mut complete = true;
    while complete {
        let chunk = response
            .chunk()
            .await
            .map_err(|e| transport_error(url, timeout, &e))?;
        let Some(chunk) = chunk else { break };
        let room = max_bytes - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        complete = chunk.len() <= room;
    }
    if status != 200 {
        let retry_after = parse_retry_after(headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()));
        return Err(classify_status(url, status, retry_after, &body));
    }
    if !complete {
        return Err(garbled(
            url,
            &format!("a body of more than {max_bytes} bytes, the most expected"),
        ));
    }
    Ok((headers, body.into()))
}

/// A 200 answer whose body breaks the contract (`what` it held): retryable, since it
/// points at a flaky proxy or backend that a later call may not reproduce.
pub fn garbled(url: &str, what: &str) -> ProviderError {
    ProviderError::Retryable {
        retry_after: None,
        status: Some(200),
        message: format!("{url} answered 200 with {what}"),
    }
}

/// An error and its causes on one line (reqwest's own message omits the cause), each
/// text once: a cause an outer layer already printed is skipped.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
