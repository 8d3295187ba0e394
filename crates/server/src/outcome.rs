//! API errors and their one wire form, the FHIR OperationOutcome.
//!
//! Handlers return [`ApiError`]; only here does a typed error become an HTTP status and an
//! OperationOutcome body. Messages name what the client sent, never stored patient data.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;
use tsunagi_fhir::{query::QueryError, validate::Finding};
use tsunagi_store::StoreError;

/// `application/fhir+json; charset=utf-8`.
pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// A failed request.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// OperationOutcome.issue.code.
    pub code: &'static str,
    /// Human-readable diagnostics.
    pub message: String,
    /// Profile findings, one issue each after the first (empty for most errors).
    pub findings: Vec<Finding>,
}

impl ApiError {
    /// 412: an `If-Match` precondition names another version.
    pub fn precondition_failed(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::PRECONDITION_FAILED,
            code: "conflict",
            message: message.into(),
            findings: Vec::new(),
        }
    }

    /// 400 with issue code `invalid` (or `not-supported`).
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
            findings: Vec::new(),
        }
    }

    /// 422: well-formed, but breaks a business rule.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "business-rule",
            message: message.into(),
            findings: Vec::new(),
        }
    }

    /// 415: the body is not FHIR JSON.
    pub fn unsupported_media(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "not-supported",
            message: message.into(),
            findings: Vec::new(),
        }
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not-found",
            message: message.into(),
            findings: Vec::new(),
        }
    }

    /// 410.
    pub fn gone(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::GONE,
            code: "deleted",
            message: message.into(),
            findings: Vec::new(),
        }
    }

    /// 405: clinical resources are read-only on this API.
    pub fn read_only(method: &str, path: &str) -> Self {
        Self {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: "not-supported",
            message: format!(
                "{method} {path}: clinical resources are read-only on this API; data arrives through the adapters"
            ),
            findings: Vec::new(),
        }
    }

    /// 401: no valid access token. The reason names the failed check, never the token.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "login",
            message: message.into(),
            findings: Vec::new(),
        }
    }

    /// 403: the token's scopes or the principal's role do not allow this kind of request.
    /// Never used for a patient one may not see: that is a 404 or an empty result, as if the
    /// data did not exist.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: message.into(),
            findings: Vec::new(),
        }
    }

    /// 500 for a failure of our own (not the store's).
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "exception",
            message: message.into(),
            findings: Vec::new(),
        }
    }

    /// 422: the resource does not conform to a profile; one issue per finding.
    pub fn nonconformant(message: impl Into<String>, findings: Vec<Finding>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "processing",
            message: message.into(),
            findings,
        }
    }

    /// 502: a hospital's system the request was forwarded to failed (unreachable, an error of
    /// its own, an answer that is not what was asked).
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_GATEWAY,
            code: "transient",
            message: message.into(),
            findings: Vec::new(),
        }
    }

    /// 504: a hospital's system the request was forwarded to did not answer in time.
    pub fn gateway_timeout(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::GATEWAY_TIMEOUT,
            code: "timeout",
            message: message.into(),
            findings: Vec::new(),
        }
    }

    /// 409: the request names what cannot be told apart.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::CONFLICT,
            code: "conflict",
            message: message.into(),
            findings: Vec::new(),
        }
    }

    /// 429: this caller has too many requests of this kind in flight.
    pub fn too_many(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "throttled",
            message: message.into(),
            findings: Vec::new(),
        }
    }

    /// 503: too busy now; the request can be retried.
    pub fn busy(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "throttled",
            message: message.into(),
            findings: Vec::new(),
        }
    }

    /// 406.
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_ACCEPTABLE,
            code: "not-supported",
            message: message.into(),
            findings: Vec::new(),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> Self {
        ApiError::bad_request("invalid", error.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Invalid(message) => ApiError::bad_request("invalid", message),
            StoreError::NotFound(message) => ApiError {
                status: StatusCode::NOT_FOUND,
                code: "not-found",
                message,
                findings: Vec::new(),
            },
            StoreError::Unavailable(message) => {
                tracing::error!(target: "tsunagi::store", error = %message, "the database is unavailable");
                ApiError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    code: "transient",
                    message: "the database is unavailable; the request can be retried".to_owned(),
                    findings: Vec::new(),
                }
            }
            // The database's text names a constraint; the client learns only that it raced.
            StoreError::Conflict(_) | StoreError::ClaimLost(_) => ApiError {
                status: StatusCode::CONFLICT,
                code: "conflict",
                message: "another write already holds the same key".to_owned(),
                findings: Vec::new(),
            },
            other => {
                // Logged inside the request's span, so the line carries its request id. Only
                // the database's own text of a failure is logged (it names statements and
                // constraints, never bound values); a corrupt record's message can name an id,
                // so only its kind is.
                match &other {
                    StoreError::Database(message) => {
                        tracing::error!(target: "tsunagi::store", error = %message, "the store failed")
                    }
                    StoreError::Corrupt(_) => {
                        tracing::error!(target: "tsunagi::store", "stored data could not be read")
                    }
                    _ => {
                        tracing::error!(target: "tsunagi::store", error = %other, "the store failed")
                    }
                }
                ApiError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    code: "exception",
                    // The store's message can name SQL; clients get a generic text.
                    message: match other {
                        StoreError::Corrupt(_) => "stored data could not be read".to_owned(),
                        _ => "the store failed; the request can be retried".to_owned(),
                    },
                    findings: Vec::new(),
                }
            }
        }
    }
}

/// An OperationOutcome with one issue.
pub fn outcome(severity: &str, code: &str, message: &str) -> serde_json::Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": message}]
    })
}

/// One profile finding as an OperationOutcome error issue.
pub fn finding_issue(finding: &Finding) -> serde_json::Value {
    json!({
        "severity": "error",
        "code": finding.kind.issue_code(),
        "diagnostics": finding.message,
        "expression": [finding.location],
    })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let severity = if self.status.is_server_error() {
            "fatal"
        } else {
            "error"
        };
        let mut body = outcome(severity, self.code, &self.message);
        if let Some(serde_json::Value::Array(issues)) = body.get_mut("issue") {
            issues.extend(self.findings.iter().map(finding_issue));
        }
        let body = body.to_string();
        let mut response = (self.status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
        response
    }
}
