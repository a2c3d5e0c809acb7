//! The admin API client of the management verbs: finds the node (`--api`,
//! the config's admin.listen, the default), finds the token (`--token`,
//! `SLUICE_TOKEN`, `data_dir/admin.token`) and turns HTTP outcomes into
//! [`Failure`]s. The config is `--config`, else `SLUICE_CONFIG`, else
//! [`SYSTEM_CONFIG`] when it exists, so the verbs work from any directory.

use super::{Failure, GlobalArgs};
use crate::admin::ErrorBody;
use crate::config::Config;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::net::SocketAddr;
use std::time::Duration;

/// The node configuration read when neither `--config` nor `SLUICE_CONFIG`
/// names one (as Postfix reads /etc/postfix/main.cf).
pub(crate) const SYSTEM_CONFIG: &str = "/etc/sluice/sluice.toml";

/// How long the liveness probe behind a missing token may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Items asked for per page of a listing (the node's maximum), unless
/// `SLUICE_PAGE_SIZE` asks for smaller pages.
const PAGE_SIZE: usize = 1000;

fn page_size() -> usize {
    std::env::var("SLUICE_PAGE_SIZE")
        .ok()
        .and_then(|text| text.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .map_or(PAGE_SIZE, |n| n.min(PAGE_SIZE))
}

/// Why an API call failed.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// No HTTP exchange happened.
    Unreachable { url: String, error: String },
    /// The node answered with an error status.
    Status { status: u16, message: String },
    /// The node answered 2xx with a body we cannot read.
    BadResponse { url: String, error: String },
}

impl ApiError {
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, ApiError::Status { status: 404, .. })
    }

    /// For writes of an object: a 400 means the node's validation refused it,
    /// a configuration error (exit 2) like a bad `apply` file; the rest as usual.
    pub(crate) fn refused_as_invalid(self, noun: &str) -> Failure {
        match self {
            ApiError::Status { status: 400, message } => Failure::usage(format!("invalid {noun}: {message}")),
            other => Failure::from(other),
        }
    }
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Failure {
        match error {
            ApiError::Unreachable { url, error } => {
                Failure::runtime(format!("no sluice node is running at {url} ({error})"))
            }
            ApiError::Status { status: 401, message } => Failure::runtime(
                "the node refused the admin token: pass --token, set SLUICE_TOKEN, \
                 or point --config at the node's configuration",
            )
            .with_detail(message),
            ApiError::Status { status, message } => {
                Failure::runtime(message).with_detail(format!("HTTP status {status}"))
            }
            ApiError::BadResponse { url, error } => {
                Failure::runtime(format!("unexpected answer from {url}: {error}"))
            }
        }
    }
}

/// A connection to one node's admin API.
pub(crate) struct ApiClient {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl ApiClient {
    /// Resolves address and token from the global options.
    pub(crate) fn connect(global: &GlobalArgs) -> Result<ApiClient, Failure> {
        let config = load_config(global)?;
        let base = match &global.api {
            Some(api) => api_base(api)?,
            None => api_url(config.admin_listen),
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build()
            .into();
        let token = match &global.token {
            Some(token) => token.trim().to_string(),
            None => {
                let path = config.token_path();
                match std::fs::read_to_string(&path) {
                    Ok(text) => text.trim().to_string(),
                    // A node that never ran here has no token either: say
                    // which of the two it is before blaming the token.
                    Err(error) => {
                        probe(&base)?;
                        return Err(Failure::usage(format!(
                            "no admin token: pass --token, set SLUICE_TOKEN, or give the node's \
                             --config or SLUICE_CONFIG (cannot read {}: {error})",
                            path.display()
                        )));
                    }
                }
            }
        };
        Ok(ApiClient { base, token, agent })
    }

    /// `GET path`, decoded.
    pub(crate) fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        self.call("GET", path, None)?.decode()
    }

    /// `GET path` page by page (SPEC section 6), following `X-Next-Cursor`
    /// until the last page or until `cap` items came; `each` gets every page.
    pub(crate) fn each_page<T: DeserializeOwned>(
        &self,
        path: &str,
        cap: Option<usize>,
        mut each: impl FnMut(Vec<T>) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        let separator = if path.contains('?') { '&' } else { '?' };
        let mut cursor: Option<String> = None;
        let mut left = cap.unwrap_or(usize::MAX);
        let page_size = page_size();
        while left > 0 {
            let limit = left.min(page_size);
            let mut page_path = format!("{path}{separator}limit={limit}");
            if let Some(cursor) = &cursor {
                page_path.push_str(&format!("&cursor={}", segment(cursor)));
            }
            let answer = self.call("GET", &page_path, None)?;
            let next = answer.next_cursor.clone();
            let mut items: Vec<T> = answer.decode()?;
            items.truncate(left);
            left -= items.len();
            each(items)?;
            match next {
                // A cursor that does not move would loop forever.
                Some(next) if cursor.as_deref() != Some(next.as_str()) => cursor = Some(next),
                _ => break,
            }
        }
        Ok(())
    }

    /// `POST path` with a JSON body.
    pub(crate) fn post(&self, path: &str, body: &impl Serialize) -> Result<Answer, ApiError> {
        self.call("POST", path, Some(to_json(body)?))
    }

    /// `POST path` without a body (queue actions).
    pub(crate) fn post_empty(&self, path: &str) -> Result<Answer, ApiError> {
        self.call("POST", path, None)
    }

    /// `PUT path` with a JSON body.
    pub(crate) fn put(&self, path: &str, body: &impl Serialize) -> Result<Answer, ApiError> {
        self.call("PUT", path, Some(to_json(body)?))
    }

    /// `DELETE path`.
    pub(crate) fn delete(&self, path: &str) -> Result<Answer, ApiError> {
        self.call("DELETE", path, None)
    }

    fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> Result<Answer, ApiError> {
        let url = format!("{}/api/v1/{path}", self.base);
        let authorization = format!("Bearer {}", self.token);
        let sent = match (method, body) {
            ("GET", _) => self
                .agent
                .get(&url)
                .header("Authorization", &authorization)
                .call(),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("Authorization", &authorization)
                .call(),
            (method, body) => {
                let request = match method {
                    "PUT" => self.agent.put(&url),
                    _ => self.agent.post(&url),
                }
                .header("Authorization", &authorization);
                match body {
                    Some(body) => request.send_json(body),
                    None => request.send_empty(),
                }
            }
        };
        let mut response = sent.map_err(|error| ApiError::Unreachable {
            url: self.base.clone(),
            error: error.to_string(),
        })?;
        let status = response.status().as_u16();
        let next_cursor = response
            .headers()
            .get("x-next-cursor")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|error| ApiError::Unreachable {
                url: self.base.clone(),
                error: error.to_string(),
            })?;
        if (200..300).contains(&status) {
            return Ok(Answer {
                url,
                text,
                next_cursor,
            });
        }
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|body| body.error)
            .unwrap_or_else(|_| format!("{method} {url} answered {status}: {}", text.trim()));
        Err(ApiError::Status { status, message })
    }
}

/// A successful answer's body.
pub(crate) struct Answer {
    url: String,
    text: String,
    /// The next page of a paged listing, if any.
    next_cursor: Option<String>,
}

impl Answer {
    /// The body as JSON.
    pub(crate) fn decode<T: DeserializeOwned>(self) -> Result<T, ApiError> {
        serde_json::from_str(&self.text).map_err(|error| ApiError::BadResponse {
            url: self.url,
            error: error.to_string(),
        })
    }
}

fn to_json(body: &impl Serialize) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(body).map_err(|error| ApiError::BadResponse {
        url: String::new(),
        error: error.to_string(),
    })
}

/// The node configuration of the management verbs: `--config` (or
/// `SLUICE_CONFIG`), else [`SYSTEM_CONFIG`] when it exists, else the
/// built-in defaults.
pub(crate) fn load_config(global: &GlobalArgs) -> Result<Config, Failure> {
    let system = std::path::Path::new(SYSTEM_CONFIG);
    let path = global
        .config
        .as_deref()
        .or_else(|| system.exists().then_some(system));
    Config::load(path).map_err(|error| Failure::usage(error.to_string()))
}

/// `--api` as a base URL: `host:port` gets `http://` (what the admin
/// listener speaks); another scheme is refused with the form expected.
fn api_base(api: &str) -> Result<String, Failure> {
    let api = api.trim().trim_end_matches('/');
    match api.split_once("://") {
        None => Ok(format!("http://{api}")),
        Some(("http" | "https", rest)) if !rest.is_empty() => Ok(api.to_string()),
        Some(_) => Err(Failure::usage(format!(
            "--api {api:?}: expected http://HOST:PORT or HOST:PORT, e.g. http://127.0.0.1:8025"
        ))),
    }
}

/// Whether anything answers at `base`: the liveness path, no token needed.
fn probe(base: &str) -> Result<(), Failure> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(PROBE_TIMEOUT))
        .build()
        .into();
    agent
        .get(&format!("{base}/healthz"))
        .call()
        .map(drop)
        .map_err(|error| {
            Failure::from(ApiError::Unreachable {
                url: base.to_string(),
                error: error.to_string(),
            })
        })
}

/// The URL of an admin listener; a wildcard listen address is reached on loopback.
pub(crate) fn api_url(listen: SocketAddr) -> String {
    let host = match listen.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
        ip if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
    };
    format!("http://{host}:{}", listen.port())
}

/// One path segment, percent-encoded (connector names have spaces).
pub(crate) fn segment(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// A query string of the given pairs (values percent-encoded), or "".
pub(crate) fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(key, value)| value.as_ref().map(|v| format!("{key}={}", segment(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_without_a_scheme_is_http_and_other_schemes_are_refused() {
        assert_eq!(api_base("127.0.0.1:8025").unwrap(), "http://127.0.0.1:8025");
        assert_eq!(api_base("http://gw.test:8025/").unwrap(), "http://gw.test:8025");
        assert_eq!(api_base("https://gw.test").unwrap(), "https://gw.test");
        let refused = api_base("smtp://gw.test:25").unwrap_err();
        assert_eq!(refused.exit_code, 2);
        assert!(
            refused.message.contains("http://HOST:PORT"),
            "{}",
            refused.message
        );
    }
}
