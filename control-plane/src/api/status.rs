//! `metav1.Status` error bodies.

use crate::server::http::Response;
use serde_json::{json, Map, Value};

/// An API error: HTTP code, reason and message, with the object it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status code.
    pub code: u16,
    /// The Status `reason`.
    pub reason: &'static str,
    /// The message.
    pub message: String,
    /// `details.name` and `details.kind` (and `details.group`).
    pub details: Option<Box<(String, String, String)>>,
    /// A complete Status body made elsewhere (validation), served as it is.
    pub raw: Option<Box<Value>>,
}

/// A write into a member that is not an object (`"metadata": 5`, a JSON array body): 400.
impl From<crate::json::NotAnObject> for ApiError {
    fn from(e: crate::json::NotAnObject) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> Self {
        ApiError { code, reason, message, details: None, raw: None }
    }

    /// Wraps a complete Status body (its `code` is the HTTP status).
    pub fn from_status(status: Value) -> Self {
        let code =
            status.get("code").and_then(Value::as_u64).and_then(|c| u16::try_from(c).ok()).unwrap_or(500);
        let message = status.get("message").and_then(Value::as_str).unwrap_or("").to_string();
        let mut e = Self::new(code, "", message);
        e.raw = Some(Box::new(status));
        e
    }

    fn with(mut self, name: &str, resource: &str, group: &str) -> Self {
        self.details = Some(Box::new((name.to_string(), resource.to_string(), group.to_string())));
        self
    }

    /// 404 NotFound: `<resource> "<name>" not found`.
    pub fn not_found(resource: &str, group: &str, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} \"{name}\" not found", qualified(resource, group)))
            .with(name, resource, group)
    }

    /// 409 AlreadyExists.
    pub fn already_exists(resource: &str, group: &str, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", qualified(resource, group)))
            .with(name, resource, group)
    }

    /// 409 Conflict for a stale resourceVersion or a failed precondition.
    pub fn conflict(resource: &str, group: &str, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {} \"{name}\": {why}", qualified(resource, group)),
        )
        .with(name, resource, group)
    }

    /// 422 Invalid.
    pub fn invalid(kind: &str, name: &str, causes: &str) -> Self {
        Self::new(422, "Invalid", format!("{kind} \"{name}\" is invalid: {causes}"))
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into())
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized".into())
    }

    /// 403 Forbidden.
    pub fn forbidden(resource: &str, name: &str, why: &str) -> Self {
        Self::new(403, "Forbidden", format!("{resource} \"{name}\" is forbidden: {why}"))
            .with(name, resource, "")
    }

    /// 403 Forbidden with a complete message (the authorizer's).
    pub fn denied(message: String, resource: &str, group: &str, name: &str) -> Self {
        Self::new(403, "Forbidden", message).with(name, resource, group)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )
    }

    /// 404 for a path that names nothing.
    pub fn no_route() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource".into())
    }

    /// 406 NotAcceptable.
    pub fn not_acceptable(accept: &str) -> Self {
        Self::new(406, "NotAcceptable", format!("only the following media types are accepted: application/json, application/yaml (asked for {accept})"))
    }

    /// 410 Expired.
    pub fn expired(message: String) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 413 RequestEntityTooLarge.
    pub fn too_large() -> Self {
        Self::new(413, "RequestEntityTooLarge", "Request entity too large: limit is 3145728".into())
    }

    /// 413 RequestEntityTooLarge with its own message (an object or a patch over a limit).
    pub fn entity_too_large(message: String) -> Self {
        Self::new(413, "RequestEntityTooLarge", message)
    }

    /// 422 with a bare message, as kube-apiserver answers a JSON patch it cannot apply.
    pub fn unprocessable(message: String) -> Self {
        Self::new(422, "Invalid", message)
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {ct})"))
    }

    /// 415 UnsupportedMediaType for an object body in an encoding this server does not read
    /// (protobuf, CBOR): only JSON and YAML are served.
    pub fn unsupported_body(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {ct})"),
        )
    }

    /// An answer to a request refused before it reached the API (the connection's limits and
    /// HTTP's framing): 400 BadRequest, 408 Timeout, 413 RequestEntityTooLarge, 429
    /// TooManyRequests, and for 431, 501 and 505 (which Go's net/http answers in plain text
    /// before kube-apiserver sees the request) the empty reason, `StatusReasonUnknown`.
    pub fn protocol(code: u16, message: String) -> Self {
        let reason = match code {
            400 => "BadRequest",
            408 => "Timeout",
            413 => "RequestEntityTooLarge",
            429 => "TooManyRequests",
            _ => "",
        };
        Self::new(code, reason, message)
    }

    /// 500 InternalError.
    pub fn internal(message: String) -> Self {
        Self::new(500, "InternalError", format!("Internal error occurred: {message}"))
    }

    /// 503 ServiceUnavailable.
    pub fn unavailable(message: String) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// The Status body.
    pub fn to_value(&self) -> Value {
        if let Some(raw) = &self.raw {
            return (**raw).clone();
        }
        let mut v = Map::new();
        v.insert("kind".into(), json!("Status"));
        v.insert("apiVersion".into(), json!("v1"));
        v.insert("metadata".into(), json!({}));
        v.insert("status".into(), json!("Failure"));
        v.insert("message".into(), json!(self.message));
        v.insert("reason".into(), json!(self.reason));
        v.insert("code".into(), json!(self.code));
        if let Some(d) = &self.details {
            let (name, kind, group) = &**d;
            let mut details = Map::new();
            details.insert("name".into(), json!(name));
            details.insert("kind".into(), json!(kind));
            if !group.is_empty() {
                details.insert("group".into(), json!(group));
            }
            v.insert("details".into(), Value::Object(details));
        }
        Value::Object(v)
    }

    /// The response.
    pub fn response(&self) -> Response {
        Response::json(self.code, &self.to_value())
    }
}

fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_bodies_match_the_apiserver() {
        let v = ApiError::already_exists("nodes", "", "n1").to_value();
        assert_eq!(v["message"], "nodes \"n1\" already exists");
        assert_eq!(v["reason"], "AlreadyExists");
        assert_eq!(v["code"], 409);
        assert_eq!(v["details"]["kind"], "nodes");
        let l = ApiError::not_found("leases", "coordination.k8s.io", "n1").to_value();
        assert_eq!(l["message"], "leases.coordination.k8s.io \"n1\" not found");
        assert_eq!(l["details"]["group"], "coordination.k8s.io");
        assert_eq!(ApiError::too_large().response().status, 413);
    }
}
