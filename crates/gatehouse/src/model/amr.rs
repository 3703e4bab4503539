//! How a user proved who they are: RFC 8176 `amr` values, as sessions
//! record them and access tokens carry them. The type is one of the token's
//! rules, written once for this server and for gatehouse-verify
//! (`crates/gatehouse-token-rules/src/amr.rs`).

pub use gatehouse_token_rules::Amr;
