//! HTTP plumbing shared by the JWKS fetch and the revocation feed: the
//! default client and size-bounded body reads.

use std::time::Duration;

use crate::error::BuildError;

/// How long a connection to gatehouse may take to open.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a whole JWKS request, body included, may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The client used when none is given: bounded timeouts, and no redirects,
/// so the keys come from the configured URL and nowhere else.
///
/// # Errors
/// [`BuildError::HttpClient`] when the client cannot be built (TLS set-up).
pub(crate) fn default_client() -> Result<reqwest::Client, BuildError> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("gatehouse-verify/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| BuildError::HttpClient(e.to_string()))
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("the response body exceeds {0} bytes")]
    TooLarge(usize),
    #[error("reading the response body: {0}")]
    Http(#[from] reqwest::Error),
}

/// The whole body of a response, refusing anything over `limit` bytes
/// without buffering more than that (a hostile or broken server cannot make
/// the verifier allocate without bound).
///
/// # Errors
/// [`BodyError::TooLarge`] past the limit, [`BodyError::Http`] when the
/// connection fails or times out.
pub(crate) async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len().saturating_add(chunk.len()) > limit {
            return Err(BodyError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
