//! The bottom layer: ids, newtypes and secrets (`types`), the audit
//! vocabulary (`audit`), paging cursors (`cursor`), the kinds of mail (`mail`), the
//! OpenID client registry's vocabulary (`oidc`) and what the domain is
//! told of a request's client (`client`). The domain (`auth`),
//! the stores (`store`) and the configuration import it; it imports none of
//! them.

pub mod amr;
pub mod audit;
pub mod client;
pub mod cursor;
pub mod mail;
pub mod oidc;
pub mod types;
