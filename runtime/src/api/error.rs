//! The one error type at the HTTP edge. Every variant documents its status; every error
//! body is `{"error": "…"}`. Internal causes never reach the client: they travel in the
//! response extensions to [`log_cause`], which logs them.

use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::commit::FloorError;
use crate::store::{Rejected, StoreError};
use crate::validate::FieldError;

/// An API failure.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the request is malformed or a field is invalid (the message names it).
    BadRequest(String),
    /// 401: no valid credentials.
    Unauthorized(String),
    /// 403: authenticated, but not allowed.
    Forbidden(String),
    /// 404: no such route, project, session or event.
    NotFound(String),
    /// 405: the route exists with other methods.
    MethodNotAllowed,
    /// 409: a name is taken, the driver seat is occupied, an id is used elsewhere.
    Conflict(String),
    /// 413: the body is larger than the configured limit.
    PayloadTooLarge,
    /// 429: slow down; `Retry-After` says for how long (seconds).
    TooManyRequests(&'static str, u64),
    /// 503: the store or a floor is unavailable right now; retrying is safe.
    Unavailable(String),
    /// 500: a bug or an unexpected failure. The cause is logged, not returned.
    Internal(String),
}

impl ApiError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests(..) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message a client sees (internal causes stay hidden).
    pub fn message(&self) -> String {
        match self {
            ApiError::BadRequest(m)
            | ApiError::Unauthorized(m)
            | ApiError::Forbidden(m)
            | ApiError::NotFound(m)
            | ApiError::Conflict(m) => m.clone(),
            ApiError::MethodNotAllowed => "Method not allowed".into(),
            ApiError::PayloadTooLarge => "Request body too large".into(),
            ApiError::TooManyRequests(m, _) => (*m).into(),
            ApiError::Unavailable(_) => "Service temporarily unavailable; retry".into(),
            ApiError::Internal(_) => "Internal error".into(),
        }
    }
}

/// The hidden cause of a 500 or 503, for the logging middleware.
#[derive(Debug, Clone)]
struct Cause(Arc<str>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut r = (status, Json(json!({ "error": self.message() }))).into_response();
        match self {
            ApiError::TooManyRequests(_, retry_after) => {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
            }
            ApiError::Unavailable(cause) | ApiError::Internal(cause) => {
                r.extensions_mut().insert(Cause(cause.into()));
            }
            _ => {}
        }
        r
    }
}

/// Logs the hidden cause of a 5xx answer with the request it answered.
pub(crate) fn log_cause(method: &Method, path: &str, res: &Response) {
    if let Some(Cause(c)) = res.extensions().get::<Cause>() {
        tracing::error!(%method, %path, status = res.status().as_u16(), cause = %c, "request failed");
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => {
                ApiError::Conflict(format!("{} already exists", capitalise(what)))
            }
            StoreError::NotFound(what) => {
                ApiError::NotFound(format!("{} not found", capitalise(what)))
            }
            StoreError::Database(
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_),
            ) => ApiError::Unavailable(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<FloorError> for ApiError {
    fn from(e: FloorError) -> Self {
        match e {
            FloorError::Rejected(Rejected::IdTaken(id)) => {
                ApiError::Conflict(format!("id: {id} is already used by another event"))
            }
            FloorError::Rejected(Rejected::Conflict(m)) | FloorError::Conflict(m) => {
                ApiError::Conflict(m)
            }
            FloorError::Rejected(Rejected::Fenced(m)) => ApiError::Conflict(format!("term: {m}")),
            FloorError::Rejected(Rejected::NoSession(_)) | FloorError::NoSession => {
                ApiError::NotFound("Session not found".into())
            }
            FloorError::Forbidden(m) => ApiError::Forbidden(m),
            FloorError::Invalid(m) => ApiError::BadRequest(m),
            FloorError::Store(e) => match &*e {
                StoreError::Database(_) => ApiError::Unavailable(e.to_string()),
                other => ApiError::Internal(other.to_string()),
            },
            FloorError::Unavailable => ApiError::Unavailable("floor restarting".into()),
        }
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}
