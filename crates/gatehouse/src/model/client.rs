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

/// The network a client address speaks for: an IPv4 address itself (an
/// IPv4-mapped IPv6 address as the IPv4 one), an IPv6 address its /64, the
/// least a single subscriber is given and can rotate addresses within at
/// will. `-` when the address is unknown, so that such clients share one
/// budget rather than escape it.
pub fn client_network(ip: Option<IpAddr>) -> String {
    match ip.map(|ip| ip.to_canonical()) {
        None => "-".to_owned(),
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => {
            let [a, b, c, d, ..] = v6.segments();
            format!("{a:x}:{b:x}:{c:x}:{d:x}::/64")
        }
    }
}
