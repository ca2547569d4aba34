//! The shim's errors, and their one mapping to ttrpc status codes.

use crate::helper::HelperError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unimplemented(String),
    /// Lost a race: what the request was decided from changed meanwhile.
    #[error("{0}")]
    Aborted(String),
    /// Out of a resource the node must free first (space for the state).
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Internal(String),
}

impl From<crate::ids::IdError> for Error {
    fn from(e: crate::ids::IdError) -> Self {
        Error::InvalidArgument(e.to_string())
    }
}

impl From<crate::resize::ResizeError> for Error {
    fn from(e: crate::resize::ResizeError) -> Self {
        use crate::resize::ResizeError as R;
        match e {
            R::Invalid { .. } => Error::InvalidArgument(e.to_string()),
            R::BelowUsage { .. } | R::NotReclaimed { .. } => {
                Error::FailedPrecondition(e.to_string())
            }
            R::Gone(_) => Error::NotFound(e.to_string()),
            R::Write { .. } => Error::Internal(e.to_string()),
        }
    }
}

impl From<crate::traits::enforce::EnforceError> for Error {
    fn from(e: crate::traits::enforce::EnforceError) -> Self {
        use crate::traits::enforce::EnforceError as E;
        match e {
            E::Refused { .. } | E::Json { .. } => Error::InvalidArgument(e.to_string()),
            E::Catalogue { .. } => Error::FailedPrecondition(e.to_string()),
            E::Io { .. } => Error::Internal(e.to_string()),
        }
    }
}

impl From<HelperError> for Error {
    fn from(e: HelperError) -> Self {
        match e {
            HelperError::NotFound(m) => Error::NotFound(m),
            HelperError::WrongState(m) => Error::FailedPrecondition(m),
            HelperError::Invalid(m) => Error::InvalidArgument(m),
            HelperError::Failed(m) => Error::Internal(m),
        }
    }
}

impl From<Error> for containerd_shim::protos::ttrpc::Error {
    fn from(e: Error) -> Self {
        use containerd_shim::protos::ttrpc::{get_status, Code};
        let code = match &e {
            Error::NotFound(_) => Code::NOT_FOUND,
            Error::AlreadyExists(_) => Code::ALREADY_EXISTS,
            Error::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            Error::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            Error::Unimplemented(_) => Code::UNIMPLEMENTED,
            Error::Aborted(_) => Code::ABORTED,
            Error::ResourceExhausted(_) => Code::RESOURCE_EXHAUSTED,
            Error::Internal(_) => Code::INTERNAL,
        };
        containerd_shim::protos::ttrpc::Error::RpcStatus(get_status(code, e.to_string()))
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::ttrpc::{Code, Error as TtrpcError};

    fn code(e: Error) -> Code {
        match TtrpcError::from(e) {
            TtrpcError::RpcStatus(s) => s.code(),
            other => panic!("not a status: {other:?}"),
        }
    }

    #[test]
    fn every_error_maps_to_the_code_containerd_expects() {
        assert_eq!(code(Error::NotFound("x".into())), Code::NOT_FOUND);
        assert_eq!(code(Error::AlreadyExists("x".into())), Code::ALREADY_EXISTS);
        assert_eq!(
            code(Error::InvalidArgument("x".into())),
            Code::INVALID_ARGUMENT
        );
        assert_eq!(
            code(Error::FailedPrecondition("x".into())),
            Code::FAILED_PRECONDITION
        );
        assert_eq!(code(Error::Unimplemented("x".into())), Code::UNIMPLEMENTED);
        assert_eq!(code(Error::Aborted("x".into())), Code::ABORTED);
        assert_eq!(
            code(Error::ResourceExhausted("x".into())),
            Code::RESOURCE_EXHAUSTED
        );
        assert_eq!(code(Error::Internal("x".into())), Code::INTERNAL);
    }

    #[test]
    fn helper_errors_keep_their_meaning() {
        assert_eq!(
            code(HelperError::NotFound("gone".into()).into()),
            Code::NOT_FOUND
        );
        assert_eq!(
            code(HelperError::WrongState("running".into()).into()),
            Code::FAILED_PRECONDITION
        );
        assert_eq!(
            code(HelperError::Invalid("bad spec".into()).into()),
            Code::INVALID_ARGUMENT
        );
        assert_eq!(
            code(HelperError::Failed("mount".into()).into()),
            Code::INTERNAL
        );
        let msg = TtrpcError::from(Error::from(
            crate::ids::validate("container id", "../x").unwrap_err(),
        ));
        assert!(format!("{msg:?}").contains("../x"));
    }

    /// A pod's own bad traits are its fault (InvalidArgument); a broken
    /// catalogue or an unreadable config.json is the node's, and says so.
    #[test]
    fn trait_enforcement_errors_keep_their_code() {
        use crate::traits::enforce::{apply_to_bundle, EnforceError};
        let dir = crate::testfs::FakeDir::new("enforce", &[]);
        let config = dir.join("config.json");
        let catalogue = Ok(crate::traits::Catalogue::builtin());

        let err = apply_to_bundle(&config, &catalogue).unwrap_err();
        assert!(matches!(err, EnforceError::Io { .. }), "{err:?}");
        assert_eq!(code(err.into()), Code::INTERNAL);

        std::fs::write(&config, "{not json").unwrap();
        let err = apply_to_bundle(&config, &catalogue).unwrap_err();
        assert_eq!(code(err.into()), Code::INVALID_ARGUMENT);

        let pod = r#"{"annotations": {"trait.tidal.dev/no-such-trait": "{}"}}"#;
        std::fs::write(&config, pod).unwrap();
        let err = apply_to_bundle(&config, &catalogue).unwrap_err();
        assert!(matches!(err, EnforceError::Refused { .. }), "{err:?}");
        assert_eq!(code(err.into()), Code::INVALID_ARGUMENT);

        let broken = Err("traits/x.yaml: not a TraitDefinition".to_string());
        let err = apply_to_bundle(&config, &broken).unwrap_err();
        assert!(err.to_string().contains("catalogue is broken"), "{err}");
        assert_eq!(code(err.into()), Code::FAILED_PRECONDITION);
    }
}
