//! `/login` and `/logout`.

use super::*;

/// `GET /login`: the form; a visitor already signed in goes straight on.
#[utoipa::path(
    get,
    path = "/login",
    tag = "pages",
    operation_id = "loginPage",
    params(PageQueryParams),
    responses(
        (status = 200, description = "The sign-in form", content_type = "text/html",
            body = String),
        (status = 303, response = oa::PageRedirect),
        (status = 503, response = oa::PageError),
    )
)]
pub(super) async fn login_page(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let q = PageQuery::parse(query.as_deref());
    let return_to = ReturnTo::parse_or_default(q.return_to.as_deref(), &state.web.allowed_origins);
    if current_session(&state, &headers).await?.is_some() {
        return Ok(see_other(return_to.as_str()));
    }
    Ok(html(
        StatusCode::OK,
        views::login(&views::LoginView {
            email: "",
            return_to: &return_to,
            error: None,
            notice: q.notice,
            registration_open: registration_open(&state),
        }),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginForm {
    pub(super) email: String,
    pub(super) password: String,
    /// Absent and empty alike mean the account page.
    #[serde(default)]
    pub(super) return_to: String,
}

/// `POST /login`: a new session in the cookie and 303 to `return_to`
/// (checked again here: the hidden field is the client's to forge).
#[utoipa::path(
    post,
    path = "/login",
    tag = "pages",
    operation_id = "loginForm",
    description = "Form posts need an allowed `Origin`, or none and \
        `Sec-Fetch-Site: same-origin` (403 otherwise).",
    request_body(content = LoginForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, response = oa::PageRedirect),
        (status = 400, response = oa::PageError),
        (status = 401, description = "The form again, with one message for every failure",
            content_type = "text/html", body = String,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"gatehouse\"`"))),
        (status = 403, response = oa::PageError),
        (status = 413, response = oa::PageError),
        (status = 415, response = oa::PageError),
        (status = 429, description = "The form again: try again in N minutes",
            content_type = "text/html", body = String,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
        (status = 503, description = "The form again: the service cannot answer",
            content_type = "text/html", body = String,
            headers(("Retry-After" = String, description = "`1`"))),
    )
)]
pub(super) async fn login(
    State(state): State<AppState>,
    Client(client): Client,
    Form(form): Form<LoginForm>,
) -> Response {
    let return_to =
        ReturnTo::parse_or_default(non_empty(&form.return_to), &state.web.allowed_origins);
    let failed = |status: StatusCode, message: &str| {
        html(
            status,
            views::login(&views::LoginView {
                email: form.email.trim(),
                return_to: &return_to,
                error: Some(message),
                notice: None,
                registration_open: registration_open(&state),
            }),
        )
    };
    match state
        .accounts
        .login(&form.email, Password::new(form.password), &client)
        .await
    {
        Ok((_, new)) => {
            let cookie = state
                .web
                .session_cookie(&new.secret, &new.record, new.record.created_at);
            let mut res = see_other(return_to.as_str());
            res.headers_mut().append(SET_COOKIE, cookie);
            res
        }
        Err(LoginError::InvalidCredentials) => {
            with_challenge(failed(StatusCode::UNAUTHORIZED, INVALID_LOGIN))
        }
        Err(LoginError::Throttled { retry_after }) => with_retry_after(
            failed(StatusCode::TOO_MANY_REQUESTS, &try_again_in(retry_after)),
            retry_after,
        ),
        Err(LoginError::Busy) => with_retry_after(
            failed(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE),
            Duration::from_secs(1),
        ),
        Err(LoginError::Store(e)) => {
            let _ = crate::error::unavailable(e);
            with_retry_after(
                failed(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE),
                Duration::from_secs(1),
            )
        }
    }
}

/// A post with no fields (the sign-out buttons). Taking it still holds the
/// body to the form rules: the right content type, nothing unexpected.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NoFields {}

/// `POST /logout`: ends the cookie's session, clears the cookie, and shows
/// the login page. Without a live session there is nothing to end; the
/// answer is the same.
#[utoipa::path(
    post,
    path = "/logout",
    tag = "pages",
    operation_id = "logoutForm",
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
pub(super) async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(NoFields {}): Form<NoFields>,
) -> Result<Response, PageError> {
    if let Some(who) = current_session(&state, &headers).await? {
        state
            .sessions
            .end(
                who.user.id,
                who.session.id,
                Actor::User(who.user.id),
                Ending::Logout,
            )
            .await
            .map_err(store_failed)?;
    }
    let mut res = see_other("/login?notice=signed-out");
    res.headers_mut()
        .append(SET_COOKIE, state.web.removal_cookie());
    Ok(res)
}

// ---------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------
