//! Errors of the lab API server. [`ApiError`] is what a client sees: it renders as a
//! Kubernetes `Status` object (`kind: Status`, `status: Failure`, `code`, `reason`, `details`)
//! with the HTTP code the real kube-apiserver uses for the same situation
//! (`k8s.io/apimachinery/pkg/api/errors`). [`StartError`] is what the embedding process sees.
//! This module must not decide *when* an error happens; the store and the router do.

use serde_json::{json, Value};

use super::resources::ResourceInfo;

/// A request-level failure, returned to the client as a `Status` body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code, copied into `Status.code`.
    pub code: u16,
    /// `Status.reason` (`NotFound`, `Conflict`, `AlreadyExists`, `Expired`, ...).
    pub reason: &'static str,
    /// Human-readable `Status.message`.
    pub message: String,
    /// `Status.details`: (group, plural, name) of the object concerned, when there is one.
    pub details: Option<(String, String, String)>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn about(mut self, res: &ResourceInfo, name: &str) -> Self {
        self.details = Some((res.group.clone(), res.plural.clone(), name.to_owned()));
        self
    }

    /// 404 for a named object that does not exist.
    pub fn not_found(res: &ResourceInfo, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", res.qualified()),
        )
        .about(res, name)
    }

    /// 404 for a URL that names no served resource.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    /// 404 for a create in a namespace that does not exist.
    pub fn namespace_not_found(ns: &str) -> Self {
        let mut e = Self::new(404, "NotFound", format!("namespaces \"{ns}\" not found"));
        e.details = Some((String::new(), "namespaces".into(), ns.to_owned()));
        e
    }

    /// 409 for a create whose name is taken.
    pub fn already_exists(res: &ResourceInfo, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", res.qualified()),
        )
        .about(res, name)
    }

    /// 409 for a write carrying a stale `resourceVersion` (optimistic concurrency).
    pub fn conflict(res: &ResourceInfo, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                res.qualified()
            ),
        )
        .about(res, name)
    }

    /// 409 for a failed delete precondition (uid or resourceVersion).
    pub fn precondition_failed(res: &ResourceInfo, name: &str, what: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: {what}",
                res.qualified()
            ),
        )
        .about(res, name)
    }

    /// 410 for a watch or continue token older than the history window.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 400 for a malformed request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 422 for an object that fails validation.
    pub fn invalid(res: &ResourceInfo, name: &str, message: impl Into<String>) -> Self {
        let message = format!("{} \"{name}\" is invalid: {}", res.kind, message.into());
        Self::new(422, "Invalid", message).about(res, name)
    }

    /// 405 for a verb the resource does not support.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    /// 415 for a body or patch type the server does not implement.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    /// 413 for a request body over the size limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(413, "RequestEntityTooLarge", message)
    }

    /// The `Status` object sent to the client.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some((group, kind, name)) = &self.details {
            let mut details = json!({ "name": name, "kind": kind });
            if !group.is_empty() {
                details["group"] = json!(group);
            }
            status["details"] = details;
        }
        status
    }
}

/// Why the server could not start or persist its state.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The state file exists but cannot be read.
    #[error("cannot read state file {path}: {source}")]
    ReadState {
        /// The state file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The state file is not a snapshot this server wrote.
    #[error("state file {path} is not valid: {reason}")]
    BadState {
        /// The state file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file (state or kubeconfig) could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A kube client for the server could not be built.
    #[error("building a client for {url}: {reason}")]
    Client {
        /// The server's URL.
        url: String,
        /// Why the client could not be built.
        reason: String,
    },
}
