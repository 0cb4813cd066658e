//! The database `DATABASE_URL` names, created at the first start when it does not exist yet
//! and the role may create it, so that a first run needs no `createdb`.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// Postgres' `invalid_catalog_name`: the database does not exist.
const NO_SUCH_DATABASE: &str = "3D000";
/// Postgres' `duplicate_database`: another instance created it first.
const DATABASE_EXISTS: &str = "42P04";

/// Whether connecting failed because the database does not exist.
pub fn is_missing_database(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|error| error.code())
        .is_some_and(|code| code == NO_SUCH_DATABASE)
}

/// Creates the database `database_url` names, connected to the server's `postgres` database
/// with the same role. The reason it could not is returned for the operator (never the URL's
/// password).
pub async fn create(database_url: &str) -> Result<String, String> {
    let options = PgConnectOptions::from_str(database_url)
        .map_err(|error| format!("DATABASE_URL is not valid: {error}"))?;
    let name = options
        .get_database()
        .ok_or("DATABASE_URL names no database")?
        .to_owned();
    let mut connection = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .map_err(|error| {
            format!(
                "database `{name}` does not exist, and the server's `postgres` database to \
                 create it from cannot be reached: {error}"
            )
        })?;
    let created = sqlx::query(&format!("CREATE DATABASE {}", quoted(&name)))
        .execute(&mut connection)
        .await;
    let _closed = connection.close().await;
    match created {
        Ok(_) => Ok(name),
        Err(error)
            if error
                .as_database_error()
                .and_then(|error| error.code())
                .is_some_and(|code| code == DATABASE_EXISTS) =>
        {
            Ok(name)
        }
        Err(error) => Err(format!(
            "database `{name}` does not exist and this role cannot create it ({error}); \
             create it with `createdb {name}` or `CREATE DATABASE`"
        )),
    }
}

/// `name` as a quoted SQL identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_quoted_as_identifiers() {
        assert_eq!(quoted("twofold"), "\"twofold\"");
        assert_eq!(quoted("a\"b; DROP"), "\"a\"\"b; DROP\"");
    }
}
