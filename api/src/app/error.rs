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
    /// A WebAuthn ceremony could not go on (see [`crate::app::passkeys`]).
    #[error(transparent)]
    Passkey(#[from] crate::app::passkeys::PasskeyFailure),
}

impl AppError {
    /// The stable code, as clients, logs and metrics see it.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Domain(error) => error.code(),
            Self::Conflict => "concurrency.conflict",
            Self::Unavailable(_) => "service.unavailable",
            Self::Internal(_) => "internal",
            Self::Passkey(failure) => failure.code(),
        }
    }

    /// A database error: unavailable when the database could not be reached or answered in
    /// time, internal otherwise.
    pub fn database(error: sqlx::Error) -> Self {
        if is_unavailable(&error) {
            Self::Unavailable(Box::new(error))
        } else {
            Self::Internal(Box::new(error))
        }
    }

    /// An error a store passed on without sorting it: unavailable when its cause says the
    /// database is out of reach, internal otherwise. postgres-es sorts only I/O and TLS errors
    /// as connection errors; a pool time-out, a closed pool or a server shutting down reach us
    /// as "unknown" errors and are sorted here.
    fn unsorted(error: Box<dyn std::error::Error + Send + Sync>) -> Self {
        if is_unavailable(&*error) {
            Self::Unavailable(error)
        } else {
            Self::Internal(error)
        }
    }
}

/// Whether `error` (or any error in its cause chain) says that the database cannot be reached
/// or cannot serve now, as opposed to a bug or bad data. A client should retry those later.
pub fn is_unavailable(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(error) = error.downcast_ref::<sqlx::Error>() {
            if sqlx_unavailable(error) {
                return true;
            }
        }
        if error.is::<std::io::Error>() {
            return true;
        }
        cause = error.source();
    }
    false
}

fn sqlx_unavailable(error: &sqlx::Error) -> bool {
    match error {
        // A protocol error is bytes from the server that make no sense where they came: seen
        // when a connection is opened to a database going down (a garbled answer to the TLS
        // request), so as retryable as the I/O error it would otherwise have been.
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // SQLSTATE class 08: connection exceptions; 53: insufficient resources (too many
        // connections, out of memory or disk); 57P01-57P03: the server is shutting down,
        // crashed or is starting; 57014: a statement timed out.
        sqlx::Error::Database(error) => error.code().is_some_and(|code| {
            code.starts_with("08")
                || code.starts_with("53")
                || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "57014")
        }),
        _ => false,
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
            AggregateError::UnexpectedError(error) => Self::unsorted(error),
            AggregateError::DeserializationError(error) => Self::Internal(error),
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
            PersistenceError::UnknownError(error) => Self::unsorted(error),
            PersistenceError::DeserializationError(error) => Self::Internal(error),
        }
    }
}

impl From<NoDecision> for AppError {
    fn from(error: NoDecision) -> Self {
        Self::Internal(Box::new(error))
    }
}

#[cfg(test)]
mod tests {
    use super::is_unavailable;

    #[test]
    fn a_lost_or_garbled_connection_is_unavailable_and_a_bad_query_is_not() {
        let garbled = sqlx::Error::Protocol("unexpected response from SSLRequest: 0x00".into());
        assert!(is_unavailable(&garbled));
        assert!(is_unavailable(&sqlx::Error::PoolTimedOut));
        assert!(!is_unavailable(&sqlx::Error::RowNotFound));
        assert!(!is_unavailable(&sqlx::Error::ColumnNotFound("x".into())));
    }
}
