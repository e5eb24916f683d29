//! The admin API's one error answer: a status and a sentence, as `{"error": "..."}`.
//!
//! Every refusal of a reload maps to its status here ([`From<ReloadError>`]), in one place.
//! A 500 tells the client only that something failed on the server; what failed goes to the
//! log.

use super::views::ErrorView;
use crate::control::ReloadError;
use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// What the client is told on a 500.
const INTERNAL: &str = "internal error; the router's log has the details";

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

/// A handler's result.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// A refusal the client can act on; `message` is sent as is.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// A failure on the server: `detail` is logged, the client gets a generic sentence.
    pub fn internal(what: &str, detail: impl std::fmt::Display) -> Self {
        tracing::error!(what, error = %detail, "Admin request failed.");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL)
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The sentence the client gets.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<ReloadError> for ApiError {
    fn from(e: ReloadError) -> Self {
        let status = match &e {
            ReloadError::NotAComponent(_) => StatusCode::BAD_REQUEST,
            ReloadError::BadComponent(_)
            | ReloadError::Config(_)
            | ReloadError::Init(_)
            | ReloadError::Chain(_)
            | ReloadError::Routes(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ReloadError::NoSuchStage => StatusCode::NOT_FOUND,
            ReloadError::BuiltinStage { .. }
            | ReloadError::NothingToRollBack
            | ReloadError::RollbackUnavailable(_)
            | ReloadError::MissingTopics(_) => StatusCode::CONFLICT,
            ReloadError::Switch { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ReloadError::Persist(_) => return ApiError::internal("reload", e),
        };
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(ErrorView {
            error: self.message,
        });
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::SwitchError;
    use crate::plugin::LoadError;
    use std::time::Duration;

    fn status(e: ReloadError) -> (u16, String) {
        let a = ApiError::from(e);
        (a.status().as_u16(), a.message().to_owned())
    }

    #[test]
    fn each_refusal_has_its_status() {
        assert_eq!(status(LoadError::NotWasm.into()).0, 400);
        assert_eq!(status(LoadError::CoreModule.into()).0, 400);
        assert_eq!(
            status(LoadError::World("no transform".into()).into()).0,
            422
        );
        assert_eq!(
            status(ReloadError::Init(LoadError::Init("no db".into()))).0,
            422
        );
        assert_eq!(
            status(ReloadError::Routes(crate::router::RouteError::NoTopic {
                route: "urgent".into()
            }))
            .0,
            422
        );
        assert_eq!(status(ReloadError::NoSuchStage).0, 404);
        assert_eq!(status(ReloadError::NothingToRollBack).0, 409);
        assert_eq!(
            status(ReloadError::MissingTopics(vec![
                "t (pipeline p: routes.r)".into()
            ]))
            .0,
            409
        );
        assert_eq!(
            status(ReloadError::RollbackUnavailable("gone".into())).0,
            409
        );
        let builtin = ReloadError::BuiltinStage {
            pipeline: "p".into(),
            stage: "schema".into(),
            schema: "event.schema.json".into(),
        };
        assert_eq!(status(builtin).0, 409);
        let switch = ReloadError::Switch {
            error: SwitchError::Timeout {
                pending: 1,
                waited: Duration::from_secs(1),
            },
            restore: None,
        };
        assert_eq!(status(switch).0, 503);
    }

    #[test]
    fn a_500_tells_the_client_nothing_internal() {
        let (code, message) = status(ReloadError::Persist(
            "cannot write /srv/state/events/route/state.json: No space left".into(),
        ));
        assert_eq!(code, 500);
        assert_eq!(message, INTERNAL);
        let e = ApiError::internal("upload", "task panicked at src/x.rs:10");
        assert_eq!(e.message(), INTERNAL);
    }

    #[test]
    fn a_refusal_is_sent_as_an_error_object() {
        let response = ApiError::new(StatusCode::UNAUTHORIZED, "token needed").into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}
