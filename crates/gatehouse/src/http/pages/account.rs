//! `/account`: the visitor's sessions and password.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::http::header::SET_COOKIE;
use axum::response::Response;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::forms::{Form, NoFields, PageQuery, Viewer};
use super::respond::{
    PageError, html, see_other, store_failed, try_again_in, with_challenge, with_retry_after,
};
use super::views::{self, Notice};
use crate::auth::FieldError;
use crate::auth::accounts::ChangePasswordError;
use crate::auth::audit::{Actor, Ending};
use crate::auth::sessions::Authenticated;
use crate::auth::types::{Password, SessionId};
use crate::http::AppState;
use crate::http::extract::Client;
use crate::http::openapi as oa;

/// The query of the account page.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct NoticeParam {
    /// A fixed message to show, by name (`session-ended`,
    /// `others-ended`, `password-changed`).
    #[param(nullable = false)]
    notice: Option<String>,
}

/// `GET /account`: who am I, my devices, change password.
#[utoipa::path(
    get,
    path = "/account",
    tag = "pages",
    operation_id = "accountPage",
    security((), ("sessionCookie" = [])),
    params(NoticeParam),
    responses(
        (status = 200, description = "The account page", content_type = "text/html",
            body = String),
        (status = 303, response = oa::PageRedirect),
        (status = 503, response = oa::PageError),
    )
)]
pub(super) async fn account(
    State(state): State<AppState>,
    Viewer(who): Viewer,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let notice = PageQuery::parse(query.as_deref()).notice;
    render_account(&state, &who, notice, &[], StatusCode::OK).await
}

pub(super) async fn render_account(
    state: &AppState,
    who: &Authenticated,
    notice: Option<Notice>,
    password_errors: &[FieldError],
    status: StatusCode,
) -> Result<Response, PageError> {
    let sessions = state
        .sessions
        .live_sessions(who.user.id)
        .await
        .map_err(store_failed)?;
    let mut sessions: Vec<_> = sessions
        .into_iter()
        .map(|s| {
            let current = s.id == who.session.id;
            (s, current)
        })
        .collect();
    // This device first, then the most recently used.
    sessions.sort_by(|(a, a_cur), (b, b_cur)| {
        b_cur.cmp(a_cur).then(b.last_seen_at.cmp(&a.last_seen_at))
    });
    Ok(html(
        status,
        views::account(&views::AccountView {
            user: &who.user,
            sessions: &sessions,
            notice,
            password_errors,
        }),
    ))
}

/// `POST /account/sessions/{id}/end`: signs one device out. An id that is
/// not a UUID, unknown, or another user's is the same 404. Ending this
/// device's own session signs the browser out.
#[utoipa::path(
    post,
    path = "/account/sessions/{id}/end",
    tag = "pages",
    operation_id = "endSessionForm",
    security((), ("sessionCookie" = [])),
    params(("id" = String, Path, description = "The session's id")),
    request_body(content = NoFields, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, response = oa::PageRedirect),
        (status = 400, response = oa::PageError),
        (status = 403, response = oa::PageError),
        (status = 404, response = oa::PageError),
        (status = 413, response = oa::PageError),
        (status = 415, response = oa::PageError),
        (status = 503, response = oa::PageError),
    )
)]
pub(super) async fn end_session(
    State(state): State<AppState>,
    Viewer(who): Viewer,
    Path(id): Path<String>,
    Form(NoFields {}): Form<NoFields>,
) -> Result<Response, PageError> {
    let id = SessionId::parse(&id).ok_or_else(PageError::not_found)?;
    let ended = state
        .sessions
        .end(
            who.user.id,
            id,
            Actor::User(who.user.id),
            Ending::EndedByUser,
        )
        .await
        .map_err(store_failed)?;
    if !ended {
        return Err(PageError::not_found());
    }
    if id == who.session.id {
        let mut res = see_other("/login?notice=signed-out");
        res.headers_mut()
            .append(SET_COOKIE, state.web.removal_cookie());
        return Ok(res);
    }
    Ok(see_other("/account?notice=session-ended"))
}

/// `POST /account/sessions/end-others`: every device but this one.
#[utoipa::path(
    post,
    path = "/account/sessions/end-others",
    tag = "pages",
    operation_id = "endOthersForm",
    security((), ("sessionCookie" = [])),
    request_body(content = NoFields, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, response = oa::PageRedirect),
        (status = 400, response = oa::PageError),
        (status = 403, response = oa::PageError),
        (status = 413, response = oa::PageError),
        (status = 415, response = oa::PageError),
        (status = 503, response = oa::PageError),
    )
)]
pub(super) async fn end_others(
    State(state): State<AppState>,
    Viewer(who): Viewer,
    Form(NoFields {}): Form<NoFields>,
) -> Result<Response, PageError> {
    state
        .sessions
        .end_all_of(
            who.user.id,
            Some(who.session.id),
            Actor::User(who.user.id),
            Ending::SignedOutElsewhere,
        )
        .await
        .map_err(store_failed)?;
    Ok(see_other("/account?notice=others-ended"))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PasswordForm {
    current_password: String,
    new_password: String,
    /// The hidden username field that lets password managers file the new
    /// password under the right account; not used.
    #[serde(default, rename = "username")]
    _username: String,
}

/// `POST /account/password`: as `POST /v1/me/password` (policy first, then
/// the current password, throttled like logins; every other session ends).
#[utoipa::path(
    post,
    path = "/account/password",
    tag = "pages",
    operation_id = "changePasswordForm",
    security((), ("sessionCookie" = [])),
    request_body(content = PasswordForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, response = oa::PageRedirect),
        (status = 400, response = oa::PageError),
        (status = 401, description = "The account page again: the current password is wrong",
            content_type = "text/html", body = String,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"gatehouse\"`"))),
        (status = 403, response = oa::PageError),
        (status = 413, response = oa::PageError),
        (status = 415, response = oa::PageError),
        (status = 422, description = "The account page again, with the policy error",
            content_type = "text/html", body = String),
        (status = 429, description = "The account page again: try again in N minutes",
            content_type = "text/html", body = String,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
        (status = 503, response = oa::PageError),
    )
)]
pub(super) async fn change_password(
    State(state): State<AppState>,
    Viewer(who): Viewer,
    Client(client): Client,
    Form(form): Form<PasswordForm>,
) -> Result<Response, PageError> {
    match state
        .accounts
        .change_password(
            &who,
            Password::new(form.current_password),
            form.new_password,
            &client,
        )
        .await
    {
        Ok(()) => Ok(see_other("/account?notice=password-changed")),
        Err(ChangePasswordError::Invalid(errors)) => {
            render_account(
                &state,
                &who,
                None,
                &errors,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(ChangePasswordError::WrongPassword) => {
            let errors = [FieldError::new(
                "current_password",
                "The current password is incorrect.",
            )];
            let page =
                render_account(&state, &who, None, &errors, StatusCode::UNAUTHORIZED).await?;
            Ok(with_challenge(page))
        }
        Err(ChangePasswordError::Throttled { retry_after }) => {
            let errors = [FieldError::new(
                "current_password",
                try_again_in(retry_after),
            )];
            let page =
                render_account(&state, &who, None, &errors, StatusCode::TOO_MANY_REQUESTS).await?;
            Ok(with_retry_after(page, retry_after))
        }
        Err(ChangePasswordError::Busy) => Err(PageError::unavailable()),
        Err(ChangePasswordError::Store(e)) => Err(store_failed(e)),
    }
}
