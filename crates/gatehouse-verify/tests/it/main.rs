//! The integration tests of gatehouse-verify: a verifier against a mock
//! gatehouse on 127.0.0.1:0 (JWKS caching, revocation feed), hostile input,
//! the axum and tower integration, and the README held to what it says.

#[path = "../common/mod.rs"]
mod common;

mod feed;
mod hostile;
mod jwks;
mod middleware;
mod readme;
