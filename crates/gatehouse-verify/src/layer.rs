//! Tower middleware for any framework built on `http` types:
//! [`VerifyLayer`] verifies the bearer token and puts the [`Claims`] in the
//! request's extensions; [`RequirePermission`] answers 403 unless the claims
//! grant a permission.
//!
//! Both answer refusals themselves (401, 403, 503, as problem documents) with
//! a response body made from a `String`, so they fit any service whose
//! response body implements `From<String>` (axum's `Body`, `String`,
//! `http_body_util::Full<Bytes>`, ...).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{Layer, Service};

use crate::claims::Claims;
use crate::reject::{self, Rejection};
use crate::verifier::Verifier;

/// The future of the middleware's services.
pub type ResponseFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send + 'static>>;

/// A layer that verifies every request's bearer token: the inner service
/// runs only with verified [`Claims`] in the request's extensions; anything
/// else is answered 401 (no or invalid token) or 503 (keys or revocations
/// unavailable).
#[derive(Debug, Clone)]
pub struct VerifyLayer {
    verifier: Verifier,
}

impl VerifyLayer {
    /// A layer verifying with `verifier`.
    #[must_use]
    pub fn new(verifier: Verifier) -> Self {
        Self { verifier }
    }
}

impl<S> Layer<S> for VerifyLayer {
    type Service = VerifyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        VerifyService {
            inner,
            verifier: self.verifier.clone(),
        }
    }
}

/// The service of a [`VerifyLayer`].
#[derive(Debug, Clone)]
pub struct VerifyService<S> {
    inner: S,
    verifier: Verifier,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for VerifyService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: From<String> + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // The clone is not ready; the service that was polled ready is the
        // one that runs (tower's contract).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        Box::pin(async move {
            match reject::authenticate(&verifier, req.headers()).await {
                Ok(claims) => {
                    req.extensions_mut().insert(claims);
                    inner.call(req).await
                }
                Err(rejection) => Ok(rejection.to_response()),
            }
        })
    }
}

/// A layer that lets a request through only if its verified claims grant a
/// permission, answering 403 with `error="insufficient_scope"` (RFC 6750
/// §3.1) otherwise.
///
/// It takes the [`Claims`] that [`VerifyLayer`] (or an earlier guard) put in
/// the request's extensions. Without them it verifies the bearer token
/// itself, with the verifier given to [`with_verifier`](Self::with_verifier)
/// or else a [`Verifier`] found in the request's extensions; with neither it
/// answers 500 (a wiring mistake, never a way in).
#[derive(Debug, Clone)]
pub struct RequirePermission {
    permission: Arc<str>,
    verifier: Option<Verifier>,
}

impl RequirePermission {
    /// A guard requiring `permission` (compared exactly, e.g. `orders:read`).
    /// A permission with spaces or quotes can never be granted, since scope
    /// entries cannot contain them: such a guard refuses every request.
    #[must_use]
    pub fn new(permission: impl Into<String>) -> Self {
        let permission: String = permission.into();
        if !reject::is_scope_token(&permission) {
            tracing::warn!(permission = %permission, "RequirePermission: not a valid scope token; no token can grant it");
        }
        Self {
            permission: permission.into(),
            verifier: None,
        }
    }

    /// Verifies the bearer token with `verifier` when no claims are in the
    /// request's extensions yet.
    #[must_use]
    pub fn with_verifier(mut self, verifier: Verifier) -> Self {
        self.verifier = Some(verifier);
        self
    }

    /// The permission required.
    #[must_use]
    pub fn permission(&self) -> &str {
        &self.permission
    }
}

impl<S> Layer<S> for RequirePermission {
    type Service = RequirePermissionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequirePermissionService {
            inner,
            guard: self.clone(),
        }
    }
}

/// The service of a [`RequirePermission`] layer.
#[derive(Debug, Clone)]
pub struct RequirePermissionService<S> {
    inner: S,
    guard: RequirePermission,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequirePermissionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: From<String> + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let guard = self.guard.clone();
        Box::pin(async move {
            let granted = match req.extensions().get::<Claims>() {
                Some(claims) => claims.has_permission(&guard.permission),
                None => {
                    let verifier = guard
                        .verifier
                        .clone()
                        .or_else(|| req.extensions().get::<Verifier>().cloned());
                    let Some(verifier) = verifier else {
                        tracing::error!(
                            permission = %guard.permission,
                            "RequirePermission has no claims and no verifier: add VerifyLayer before it or use with_verifier"
                        );
                        return Ok(Rejection::misconfigured().to_response());
                    };
                    match reject::authenticate(&verifier, req.headers()).await {
                        Ok(claims) => {
                            let granted = claims.has_permission(&guard.permission);
                            req.extensions_mut().insert(claims);
                            granted
                        }
                        Err(rejection) => return Ok(rejection.to_response()),
                    }
                }
            };
            if granted {
                inner.call(req).await
            } else {
                Ok(Rejection::insufficient_scope(Arc::clone(&guard.permission)).to_response())
            }
        })
    }
}
