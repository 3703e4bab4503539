//! Verifying gatehouse access tokens in resource servers.
#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

#[cfg(feature = "axum")]
pub mod axum;
mod claims;
mod error;
mod keys;
mod layer;
mod net;
mod reject;
mod revocation;
mod token;
mod verifier;

pub use claims::Claims;
pub use error::{BuildError, VerifyError};
/// How the user proved who they are (`Claims::amr`).
pub use gatehouse_token_rules::Amr;
pub use layer::{
    RequirePermission, RequirePermissionService, ResponseFuture, VerifyLayer, VerifyService,
};
pub use reject::Rejection;
pub use revocation::RevocationStatus;
pub use token::Algorithm;
pub use verifier::{Verifier, VerifierBuilder};

/// `reqwest`, re-exported so that a client for
/// [`VerifierBuilder::http_client`] can be built without a version mismatch.
pub use reqwest;
