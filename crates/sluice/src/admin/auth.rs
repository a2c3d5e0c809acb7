//! The admin bearer token: created once per node in `data_dir/admin.token`
//! (mode 0600), required on every `/api/v1` request, compared in constant time.

use super::ErrorBody;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

/// Random bytes per token; hex-encoded it is 64 characters.
const TOKEN_BYTES: usize = 32;

/// The token file's name inside the data directory.
pub(crate) const TOKEN_FILE: &str = "admin.token";

/// Reads `data_dir/admin.token`, or creates it with a fresh random token
/// (readable by the node's user only) when it does not exist yet.
pub fn load_or_create_token(data_dir: &Path) -> io::Result<String> {
    crate::private_dir::create_dir_all(data_dir)?;
    let path = data_dir.join(TOKEN_FILE);
    let token = random_token()?;
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut file) => {
            file.write_all(token.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            Ok(token)
        }
        // Another start (or an earlier one) made it: everyone must share one token.
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            let stored = std::fs::read_to_string(&path)?.trim().to_string();
            if stored.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is empty; delete it to make a new token", path.display()),
                ));
            }
            Ok(stored)
        }
        Err(error) => Err(error),
    }
}

fn random_token() -> io::Result<String> {
    let mut bytes = [0u8; TOKEN_BYTES];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The expected token, held by the auth middleware.
pub(crate) struct BearerToken(Vec<u8>);

impl BearerToken {
    pub(crate) fn new(token: String) -> BearerToken {
        BearerToken(token.into_bytes())
    }

    /// Whether `given` is the token; the time taken does not depend on where
    /// the first differing byte is, so the token cannot be guessed byte by byte.
    fn matches(&self, given: &[u8]) -> bool {
        if given.len() != self.0.len() || self.0.is_empty() {
            return false;
        }
        let difference = given.iter().zip(&self.0).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(difference) == 0
    }
}

/// Middleware: passes the request on only with `Authorization: Bearer TOKEN`.
pub(crate) async fn require_token(
    State(token): State<Arc<BearerToken>>,
    request: Request,
    next: Next,
) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(given) if token.matches(given.as_bytes()) => next.run(request).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(ErrorBody {
                error: "missing or wrong admin token (Authorization: Bearer TOKEN)".into(),
            }),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn token_is_created_private_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let first = load_or_create_token(&data_dir).unwrap();
        assert!(first.len() >= 32);
        assert!(first.chars().all(|c| c.is_ascii_hexdigit()));
        let mode = std::fs::metadata(data_dir.join(TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create_token(&data_dir).unwrap(), first);
        let other_dir = dir.path().join("other");
        assert_ne!(load_or_create_token(&other_dir).unwrap(), first);
    }

    #[test]
    fn token_comparison_needs_every_byte() {
        let token = BearerToken::new("abcdef".into());
        assert!(token.matches(b"abcdef"));
        assert!(!token.matches(b"abcdeg"));
        assert!(!token.matches(b"abcde"));
        assert!(!token.matches(b""));
        assert!(!BearerToken::new(String::new()).matches(b""));
    }
}
