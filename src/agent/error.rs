//! What can go wrong in tidald, as one type, and its one mapping to gRPC
//! status codes. Every part of tidald (the API, and the policy engine and
//! trait controllers that call the resizer) returns these; only the API turns
//! them into a `tonic::Status`.

use super::shimclient::Refusal;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request names nothing, or something malformed.
    #[error("{0}")]
    Invalid(String),
    /// No tidal container by that name on this node.
    #[error("no tidal container {id:?} on this node")]
    NotFound { id: String },
    /// The container exists but has no running process to change.
    #[error("container {id} is not running")]
    NotRunning { id: String },
    /// The id is in more than one namespace and none was named.
    #[error("container {id:?} exists in several namespaces ({}): name one with -n", .namespaces.join(", "))]
    Ambiguous { id: String, namespaces: Vec<String> },
    /// The shim refused or failed the change: its own status code is kept.
    #[error("{0}")]
    Shim(Refusal),
    /// The node's state could not be read.
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// A part of tidald that the call needs is not there (e.g. the trait
    /// catalogue failed to load).
    #[error("{0}")]
    Unavailable(String),
}

impl Error {
    /// The gRPC code a client acts on.
    pub fn code(&self) -> tonic::Code {
        match self {
            Error::Invalid(_) | Error::Ambiguous { .. } => tonic::Code::InvalidArgument,
            Error::NotFound { .. } | Error::NotRunning { .. } => tonic::Code::NotFound,
            Error::Shim(r) => tonic::Code::from_i32(r.code),
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                tonic::Code::NotFound
            }
            Error::Io { .. } => tonic::Code::Internal,
            Error::Unavailable(_) => tonic::Code::FailedPrecondition,
        }
    }

    /// The outcome label of a failed resize in tidald's metrics.
    pub fn outcome(&self) -> String {
        format!("{:?}", self.code())
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> tonic::Status {
        tonic::Status::new(e.code(), e.to_string())
    }
}

impl From<crate::ids::IdError> for Error {
    fn from(e: crate::ids::IdError) -> Error {
        Error::Invalid(e.to_string())
    }
}

impl From<crate::resize::ResizeError> for Error {
    fn from(e: crate::resize::ResizeError) -> Error {
        Error::Invalid(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn every_error_keeps_the_code_a_client_acts_on() {
        let io = |kind| Error::Io {
            what: "reading /run/tidal".into(),
            source: std::io::Error::from(kind),
        };
        let cases = [
            (
                Error::Invalid("no container named".into()),
                Code::InvalidArgument,
            ),
            (Error::NotFound { id: "web".into() }, Code::NotFound),
            (Error::NotRunning { id: "web".into() }, Code::NotFound),
            (
                Error::Ambiguous {
                    id: "web".into(),
                    namespaces: vec!["a".into(), "b".into()],
                },
                Code::InvalidArgument,
            ),
            (
                Error::Shim(Refusal {
                    code: Code::FailedPrecondition as i32,
                    message: "memory limit below usage".into(),
                }),
                Code::FailedPrecondition,
            ),
            (
                Error::Shim(Refusal {
                    code: Code::Unavailable as i32,
                    message: "connect".into(),
                }),
                Code::Unavailable,
            ),
            (io(std::io::ErrorKind::NotFound), Code::NotFound),
            (io(std::io::ErrorKind::PermissionDenied), Code::Internal),
            (
                Error::Unavailable("catalogue".into()),
                Code::FailedPrecondition,
            ),
        ];
        for (e, code) in cases {
            let message = e.to_string();
            let status = tonic::Status::from(e);
            assert_eq!(status.code(), code, "{message}");
            assert_eq!(status.message(), message);
        }
        assert_eq!(
            Error::Ambiguous {
                id: "web".into(),
                namespaces: vec!["a".into(), "b".into()]
            }
            .to_string(),
            "container \"web\" exists in several namespaces (a, b): name one with -n"
        );
    }
}
