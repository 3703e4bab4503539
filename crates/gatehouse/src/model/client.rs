//! What the domain is told about a request's client, and how it reports a
//! bad input field: plain data the HTTP layer fills in and reads back.

use std::net::IpAddr;

/// Who is on the other end of a request, as far as we can tell.
#[derive(Debug, Clone, Default)]
pub struct ClientMeta {
    pub ip: Option<IpAddr>,
    /// Truncated to a sane length by the HTTP layer.
    pub user_agent: Option<String>,
}

/// A validation failure on one input field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}
