//! `/register`.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa::ToSchema;

use super::forms::{Form, PageQuery, PageQueryParams, non_empty, registration_open};
use super::respond::{PageError, html, see_other, store_failed, try_again_in, with_retry_after};
use super::return_to::ReturnTo;
use super::views;
use crate::auth::FieldError;
use crate::auth::accounts::{RegisterError, Registrar};
use crate::http::AppState;
use crate::http::extract::Client;
use crate::http::openapi as oa;

/// `GET /register`: the form while registration is open; 404 when closed
/// (there is no such page then).
#[utoipa::path(
    get,
    path = "/register",
    tag = "pages",
    operation_id = "registerPage",
    params(PageQueryParams),
    responses(
        (status = 200, description = "The registration form", content_type = "text/html",
            body = String),
        (status = 404, response = oa::PageError),
    )
)]
pub(super) async fn register_page(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    if !registration_open(&state) {
        return Err(PageError::not_found());
    }
    let q = PageQuery::parse(query.as_deref());
    let return_to = ReturnTo::parse_or_default(q.return_to.as_deref(), &state.web.allowed_origins);
    Ok(html(
        StatusCode::OK,
        views::register(&views::RegisterView {
            email: "",
            return_to: &return_to,
            errors: &[],
            error: None,
        }),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RegisterForm {
    email: String,
    password: String,
    #[serde(default)]
    return_to: String,
}

/// `POST /register`: creates the account (as `POST /v1/users`, without
/// logging in, within the same registration budget) and sends the browser
/// to the login page.
#[utoipa::path(
    post,
    path = "/register",
    tag = "pages",
    operation_id = "registerForm",
    request_body(content = RegisterForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, response = oa::PageRedirect),
        (status = 400, response = oa::PageError),
        (status = 403, response = oa::PageError),
        (status = 404, response = oa::PageError),
        (status = 409, description = "The form again: the email is taken",
            content_type = "text/html", body = String),
        (status = 413, response = oa::PageError),
        (status = 415, response = oa::PageError),
        (status = 422, description = "The form again, with the policy errors on their fields",
            content_type = "text/html", body = String),
        (status = 429, description = "The form again: try again in N minutes",
            content_type = "text/html", body = String,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
        (status = 503, response = oa::PageError),
    )
)]
pub(super) async fn register(
    State(state): State<AppState>,
    Client(client): Client,
    Form(form): Form<RegisterForm>,
) -> Result<Response, PageError> {
    if !registration_open(&state) {
        return Err(PageError::not_found());
    }
    let return_to =
        ReturnTo::parse_or_default(non_empty(&form.return_to), &state.web.allowed_origins);
    let registrar = Registrar::Public { ip: client.ip };
    let (status, errors) = match state
        .accounts
        .register(&form.email, form.password, Vec::new(), registrar)
        .await
    {
        Ok(_) => {
            let mut location = "/login?notice=registered".to_owned();
            if !return_to.is_default() {
                location.push('&');
                location.push_str(&views::query_of(&return_to));
            }
            return Ok(see_other(&location));
        }
        Err(RegisterError::Invalid(errors)) => (StatusCode::UNPROCESSABLE_ENTITY, errors),
        Err(RegisterError::EmailTaken) => (
            StatusCode::CONFLICT,
            vec![FieldError::new(
                "email",
                "already belongs to an account; sign in instead",
            )],
        ),
        Err(RegisterError::Throttled { retry_after }) => {
            let page = html(
                StatusCode::TOO_MANY_REQUESTS,
                views::register(&views::RegisterView {
                    email: form.email.trim(),
                    return_to: &return_to,
                    errors: &[],
                    error: Some(&try_again_in(retry_after)),
                }),
            );
            return Ok(with_retry_after(page, retry_after));
        }
        // Registration closed between the check and now.
        Err(RegisterError::Closed) => return Err(PageError::not_found()),
        Err(RegisterError::Busy) => return Err(PageError::unavailable()),
        // Public registration assigns no roles.
        Err(RegisterError::UnknownRole(_)) => return Err(PageError::bad_request()),
        Err(RegisterError::Store(e)) => return Err(store_failed(e)),
    };
    Ok(html(
        status,
        views::register(&views::RegisterView {
            email: form.email.trim(),
            return_to: &return_to,
            errors: &errors,
            error: None,
        }),
    ))
}
