//! Paging cursors: opaque to clients, the last id of a page (of users, or
//! of the audit trail).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

#[derive(Debug, thiserror::Error)]
#[error("the cursor is not one this server issued")]
pub struct BadCursor;

/// An opaque cursor: the last id of a page (of users, or of the audit
/// trail). Opaque to clients so the pagination scheme can change without
/// breaking them.
pub fn encode_cursor(id: uuid::Uuid) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

pub fn decode_cursor(cursor: &str) -> Result<uuid::Uuid, BadCursor> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| BadCursor)?;
    uuid::Uuid::from_slice(&bytes).map_err(|_| BadCursor)
}

/// Why a page could not be read: a cursor this server did not issue (the
/// client's fault, 400), or a store failure (503).
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("the cursor is not one this server issued")]
    BadCursor,
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

impl From<BadCursor> for PageError {
    fn from(_: BadCursor) -> Self {
        Self::BadCursor
    }
}
