//! `/assets/gatehouse.css` and `/assets/passkeys.js`: the pages' one
//! stylesheet and one script.

use axum::http::HeaderValue;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::response::{IntoResponse, Response};

use super::views;

/// The pages' one stylesheet.
#[utoipa::path(
    get,
    path = "/assets/gatehouse.css",
    tag = "pages",
    operation_id = "stylesheet",
    responses(
        (status = 200, description = "The stylesheet", content_type = "text/css", body = String,
            headers(("Cache-Control" = String, description = "`public, max-age=3600`"))),
    )
)]
pub(super) async fn stylesheet() -> Response {
    (
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/css; charset=utf-8"),
            ),
            (
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
            (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        views::STYLESHEET,
    )
        .into_response()
}

/// The pages' one script: the WebAuthn calls behind the passkey buttons.
#[utoipa::path(
    get,
    path = "/assets/passkeys.js",
    tag = "pages",
    operation_id = "passkeysScript",
    responses(
        (status = 200, description = "The script", content_type = "text/javascript",
            body = String,
            headers(("Cache-Control" = String, description = "`public, max-age=3600`"))),
    )
)]
pub(super) async fn script() -> Response {
    (
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            ),
            (
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
            (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        views::SCRIPT,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::{__path_script, __path_stylesheet};
    use crate::http::pages::views;

    /// The route is registered at the annotation's literal path (utoipa
    /// needs a literal); the pages link to `STYLESHEET_PATH`.
    #[test]
    fn the_stylesheet_is_routed_where_the_pages_link_to_it() {
        assert_eq!(
            <__path_stylesheet as utoipa::Path>::path(),
            views::STYLESHEET_PATH
        );
        assert_eq!(<__path_script as utoipa::Path>::path(), views::SCRIPT_PATH);
    }
}
