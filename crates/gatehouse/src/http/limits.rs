//! The limits a request body is held to, whichever handler reads it: a
//! declared length over [`BODY_LIMIT`] is refused before a byte of the body
//! is read, and the body must arrive within `request_body_timeout` of the
//! request's head.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::http::header::{CONNECTION, CONTENT_LENGTH};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::{Frame, SizeHint};
use tokio::time::Sleep;

use super::{AppState, BODY_LIMIT, pages};
use crate::error::Error;

/// Holds every request body to the limits: when the handler reads a body
/// whose `Content-Length` is over [`BODY_LIMIT`], the read fails at once
/// (nothing is read, and no `100 Continue` invites the body) and the answer
/// is 413; when the body has not arrived within the configured
/// `request_body_timeout`, the read fails and the answer is 408, whatever
/// the handler made of the failed read. Both answers close the connection:
/// the rest of the body may still be coming (RFC 9110 §15.5.9, §15.5.14).
/// Routes that read no body answer as they would anyway.
pub(super) async fn body_limits(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    // hyper has already refused a malformed or ambiguous Content-Length
    // (RFC 9112 §6.3), so a value that does not parse here is not there.
    let too_large = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| usize::try_from(n).map_or(true, |n| n > BODY_LIMIT));
    let form_page = pages::is_form_path(req.uri().path());
    let verdict = Arc::new(AtomicU8::new(FINE));
    let within = state.web.request_body_timeout;
    let recorded = verdict.clone();
    let req = req.map(|body| Body::new(LimitedBody::new(body, too_large, within, recorded)));
    let res = next.run(req).await;
    match verdict.load(Ordering::Relaxed) {
        TOO_LARGE => refused(&state, form_page, false),
        TIMED_OUT => refused(&state, form_page, true),
        _ => res,
    }
}

/// What a [`LimitedBody`] found: nothing wrong, a declared length over the
/// limit, or a body past its deadline.
const FINE: u8 = 0;
const TOO_LARGE: u8 = 1;
const TIMED_OUT: u8 = 2;

/// The 413 (or, `timed_out`, 408) answer: the hosted pages' HTML for their
/// form posts, a problem document for everything else.
fn refused(state: &AppState, form_page: bool, timed_out: bool) -> Response {
    let mut res = match (form_page, timed_out) {
        (true, _) => pages::refused_body(&state.web, timed_out),
        (false, false) => Error::PayloadTooLarge.into_response(),
        (false, true) => Error::RequestTimeout.into_response(),
    };
    res.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    res
}

/// Why a [`LimitedBody`] failed a read.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("the declared Content-Length is over the body limit")]
    TooLarge,
    #[error("the request body did not arrive within request_body_timeout")]
    TimedOut,
}

/// A request body that refuses to be read when its declared length is over
/// the limit, and fails once `deadline` has passed before its end; either
/// way it records why in `verdict`. The deadline is total, not per chunk: a
/// client trickling a byte at a time gains nothing by it.
struct LimitedBody {
    inner: Body,
    too_large: bool,
    deadline: Pin<Box<Sleep>>,
    verdict: Arc<AtomicU8>,
    /// The body has ended: the deadline no longer applies.
    ended: bool,
}

impl LimitedBody {
    fn new(inner: Body, too_large: bool, within: Duration, verdict: Arc<AtomicU8>) -> Self {
        Self {
            inner,
            too_large,
            deadline: Box::pin(tokio::time::sleep(within)),
            verdict,
            ended: false,
        }
    }

    fn refuse(&self, why: Refused) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let code = match why {
            Refused::TooLarge => TOO_LARGE,
            Refused::TimedOut => TIMED_OUT,
        };
        self.verdict.store(code, Ordering::Relaxed);
        Poll::Ready(Some(Err(axum::Error::new(why))))
    }
}

impl HttpBody for LimitedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        // Before the inner body is first polled: that poll is what would
        // send `100 Continue`.
        if this.too_large {
            return this.refuse(Refused::TooLarge);
        }
        if this.ended {
            return Poll::Ready(None);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return this.refuse(Refused::TimedOut);
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            this.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
