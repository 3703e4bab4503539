//! axum integration: the [`VerifiedClaims`] extractor, [`Claims`] as an
//! extractor of what [`VerifyLayer`] verified, and [`Rejection`] as a
//! response. The tower layers are re-exported here for one-stop imports.

use std::ops::Deref;

use axum::extract::{FromRef, FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use crate::claims::Claims;
use crate::reject::{self, Rejection};
use crate::verifier::Verifier;

pub use crate::layer::{RequirePermission, VerifyLayer};

/// The verified claims of the request's bearer token.
///
/// Takes the claims a [`VerifyLayer`] or [`RequirePermission`] already put in
/// the request's extensions; otherwise verifies the `Authorization: Bearer`
/// token with the state's [`Verifier`] (`Verifier: FromRef<S>`). Refuses with
/// 401 (`WWW-Authenticate: Bearer realm="gatehouse"`, plus
/// `error="invalid_token"` when a token was presented) or 503 when keys or
/// revocations are unavailable.
///
/// As `Option<VerifiedClaims>` it is `None` only when no `Authorization`
/// header is present: a present but invalid token is still refused, never
/// treated as anonymous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedClaims(pub Claims);

impl Deref for VerifiedClaims {
    type Target = Claims;

    fn deref(&self) -> &Claims {
        &self.0
    }
}

impl<S> FromRequestParts<S> for VerifiedClaims
where
    Verifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Rejection> {
        if let Some(claims) = parts.extensions.get::<Claims>() {
            return Ok(Self(claims.clone()));
        }
        let verifier = Verifier::from_ref(state);
        let claims = reject::authenticate(&verifier, &parts.headers).await?;
        parts.extensions.insert(claims.clone());
        Ok(Self(claims))
    }
}

impl<S> OptionalFromRequestParts<S> for VerifiedClaims
where
    Verifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Option<Self>, Rejection> {
        if parts.extensions.get::<Claims>().is_none()
            && !parts
                .headers
                .contains_key(axum::http::header::AUTHORIZATION)
        {
            return Ok(None);
        }
        <Self as FromRequestParts<S>>::from_request_parts(parts, state)
            .await
            .map(Some)
    }
}

/// The claims a [`VerifyLayer`] (or [`RequirePermission`]) verified, from
/// the request's extensions. Without such a layer in front it answers 500: a
/// wiring mistake must not look like an authentication failure, nor let the
/// request through.
impl<S> FromRequestParts<S> for Claims
where
    S: Send + Sync,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Rejection> {
        parts.extensions.get::<Claims>().cloned().ok_or_else(|| {
            tracing::error!(
                "the Claims extractor needs VerifyLayer or RequirePermission in front of the handler"
            );
            Rejection::misconfigured()
        })
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        self.to_response()
    }
}
