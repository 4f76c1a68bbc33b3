//! ClickHouse access: the client every module uses, the schema migrations and the
//! sharded layout they can render.

pub mod layout;
pub mod migrate;

use crate::config::ClickHouseSettings;

/// A client bound to the configured database, for reads and inserts of this project's
/// tables (the crate's `insert` takes a bare table name).
pub fn client(settings: &ClickHouseSettings) -> clickhouse::Client {
    server_client(settings).with_database(&settings.database)
}

/// A client not bound to any database, for statements that must work before the
/// database exists (migrations name every table fully).
pub fn server_client(settings: &ClickHouseSettings) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(&settings.url)
        .with_user(&settings.user)
        .with_password(settings.password.expose())
}

/// Checks that a database name is a plain identifier, since it is spliced into DDL
/// (identifiers cannot be bound as query parameters).
pub fn check_identifier(name: &str) -> Result<&str, InvalidIdentifier> {
    let mut chars = name.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if starts_well && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') && name.len() <= 64 {
        Ok(name)
    } else {
        Err(InvalidIdentifier(name.to_owned()))
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "`{0}` is not a valid ClickHouse identifier (letters, digits and _, not starting with a digit, at most 64)"
)]
pub struct InvalidIdentifier(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_plain_names_only() {
        assert!(check_identifier("otel").is_ok());
        assert!(check_identifier("test_0f3a").is_ok());
        for bad in ["", "1abc", "otel; DROP TABLE x", "a.b", "a-b", "`x`"] {
            assert!(check_identifier(bad).is_err(), "{bad}");
        }
    }
}
