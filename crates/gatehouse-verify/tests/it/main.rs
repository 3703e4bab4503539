//! The integration tests of gatehouse-verify: a verifier against a mock
//! gatehouse on 127.0.0.1:0 (JWKS caching, revocation feed), hostile input,
//! and the axum and tower integration.

#[path = "../common/mod.rs"]
mod common;

mod feed;
mod hostile;
mod jwks;
mod middleware;
