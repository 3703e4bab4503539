//! How a page answers: HTML, redirects, challenges, `Retry-After`, and the
//! error page (`PageError`).

use std::time::Duration;

use axum::http::header::{CONTENT_TYPE, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::Markup;

use super::views;
use crate::error::CHALLENGE;

pub(super) const UNAVAILABLE: &str = "The service cannot answer right now. Try again in a moment.";

pub(super) fn html(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

/// 303 See Other: after a post, the browser fetches `location` with GET.
pub(super) fn see_other(location: &str) -> Response {
    // Every location is ours or a re-serialised URL (ASCII); a value that
    // still does not fit a header goes to the account page.
    let value =
        HeaderValue::from_str(location).unwrap_or_else(|_| HeaderValue::from_static("/account"));
    (StatusCode::SEE_OTHER, [(LOCATION, value)]).into_response()
}

/// Where a form post goes on: 303 See Other, except to the authorization
/// endpoint, whose answer redirects to an application's origin, which the
/// posting page's `form-action` does not name: there a page sends the
/// browser on instead (a navigation that is no form submission).
pub(super) fn continue_to(location: &str) -> Response {
    if location.starts_with("/oauth2/") {
        return html(StatusCode::OK, views::continue_to(location));
    }
    see_other(location)
}

/// RFC 9110 §15.5.2: a 401 carries a challenge; the API's, for one rule.
pub(super) fn with_challenge(mut res: Response) -> Response {
    res.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
    res
}

pub(super) fn with_retry_after(mut res: Response, after: Duration) -> Response {
    // Round up: a browser that waits exactly this long must succeed.
    let secs = (after.as_secs() + u64::from(after.subsec_nanos() > 0)).max(1);
    res.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(secs));
    res
}

/// "Try again in 15 minutes", for a throttled form.
pub(super) fn try_again_in(after: Duration) -> String {
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    if secs < 60 {
        format!("Too many attempts. Try again in {} seconds.", secs.max(1))
    } else {
        let mins = secs.div_ceil(60);
        let unit = if mins == 1 { "minute" } else { "minutes" };
        format!("Too many attempts. Try again in {mins} {unit}.")
    }
}

/// A page that is only an error: what a malformed post, an unknown route
/// parameter or an outage answers. Never echoes internal error text.
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    title: &'static str,
    text: &'static str,
}

impl PageError {
    pub(super) fn bad_request() -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            title: "Bad request",
            text: "The form could not be read. Go back, reload the page and try again.",
        }
    }

    pub(super) fn too_large() -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            title: "Too large",
            text: "The form was larger than 64 KiB.",
        }
    }

    pub(super) fn timed_out() -> Self {
        Self {
            status: StatusCode::REQUEST_TIMEOUT,
            title: "Too slow",
            text: "The form did not arrive in time. Go back and try again.",
        }
    }

    pub(super) fn unsupported() -> Self {
        Self {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            title: "Unsupported form",
            text: "Send the form as application/x-www-form-urlencoded in UTF-8.",
        }
    }

    pub(super) fn not_found() -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            title: "Not found",
            text: "There is no such page.",
        }
    }

    pub(super) fn forbidden() -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            title: "Refused",
            text: "This form was sent from another site, so it was refused. \
                   Open this site's own page and try again.",
        }
    }

    pub(super) fn unavailable() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            title: "Unavailable",
            text: UNAVAILABLE,
        }
    }
}

/// A store failure: logged with its cause, answered 503 (fail closed).
pub(super) fn store_failed(e: anyhow::Error) -> PageError {
    let _ = crate::error::unavailable(e);
    PageError::unavailable()
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let res = html(self.status, views::message(self.title, self.text));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            return with_retry_after(res, Duration::from_secs(1));
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::try_again_in;

    #[test]
    fn throttle_messages_round_up() {
        assert_eq!(
            try_again_in(Duration::from_millis(1500)),
            "Too many attempts. Try again in 2 seconds."
        );
        assert_eq!(
            try_again_in(Duration::from_secs(61)),
            "Too many attempts. Try again in 2 minutes."
        );
        assert_eq!(
            try_again_in(Duration::from_secs(60)),
            "Too many attempts. Try again in 1 minute."
        );
    }
}
