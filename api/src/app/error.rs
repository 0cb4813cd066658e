//! How a use case fails: a domain rule refused, a race was lost too often, the store is out of
//! reach, or something that should not happen happened. What a client sees of each is the
//! HTTP layer's business; the codes here are the stable ones both layers log and count.

use cqrs_es::persist::PersistenceError;
use cqrs_es::AggregateError;
use twofold_domain::user::NoDecision;
use twofold_domain::UserError;

use crate::app::store::EmailTaken;

/// Every way a use case can fail.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A domain rule refused the command.
    #[error(transparent)]
    Domain(#[from] UserError),
    /// The command kept losing races with concurrent commands on the same user.
    #[error("the user was changed concurrently; retry")]
    Conflict,
    /// The database cannot be reached (or answered too slowly).
    #[error("a store is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Anything else: a bug or corrupt data. The cause is logged, never shown.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl AppError {
    /// The stable code, as clients, logs and metrics see it.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Domain(error) => error.code(),
            Self::Conflict => "concurrency.conflict",
            Self::Unavailable(_) => "service.unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// A database error: unavailable when the database could not be reached or answered in
    /// time, internal otherwise.
    pub fn database(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Self::Unavailable(Box::new(error)),
            other => Self::Internal(Box::new(other)),
        }
    }
}

impl From<AggregateError<UserError>> for AppError {
    fn from(error: AggregateError<UserError>) -> Self {
        match error {
            AggregateError::UserError(error) => Self::Domain(error),
            AggregateError::AggregateConflict => Self::Conflict,
            AggregateError::UnexpectedError(error) if error.is::<EmailTaken>() => {
                Self::Domain(UserError::EmailTaken)
            }
            AggregateError::DatabaseConnectionError(error) => Self::Unavailable(error),
            AggregateError::DeserializationError(error)
            | AggregateError::UnexpectedError(error) => Self::Internal(error),
        }
    }
}

impl From<PersistenceError> for AppError {
    fn from(error: PersistenceError) -> Self {
        match error {
            PersistenceError::ConnectionError(error) => Self::Unavailable(error),
            PersistenceError::OptimisticLockError => Self::Conflict,
            PersistenceError::UnknownError(error) if error.is::<EmailTaken>() => {
                Self::Domain(UserError::EmailTaken)
            }
            PersistenceError::DeserializationError(error)
            | PersistenceError::UnknownError(error) => Self::Internal(error),
        }
    }
}

impl From<NoDecision> for AppError {
    fn from(error: NoDecision) -> Self {
        Self::Internal(Box::new(error))
    }
}
