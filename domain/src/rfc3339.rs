//! Times in stored forms are written in RFC 3339 (`2026-11-28T21:04:05.5Z`), readable by a
//! person with SQL or a log tool, rather than in the `time` crate's default serde form (an
//! array of numbers). Plain fields use `time::serde::rfc3339` (and its `option`); this module
//! covers the shapes that need more: an optional value paired with a time, and a list of times.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;

/// A time that (de)serialises as RFC 3339.
#[derive(Serialize, Deserialize)]
struct Rfc3339(#[serde(with = "time::serde::rfc3339")] OffsetDateTime);

/// `Option<(T, OffsetDateTime)>` as `null` or `[T, "<RFC 3339>"]`.
pub(crate) mod option_pair {
    use super::*;

    pub(crate) fn serialize<S: Serializer, T: Serialize>(
        value: &Option<(T, OffsetDateTime)>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        value
            .as_ref()
            .map(|(first, at)| (first, Rfc3339(*at)))
            .serialize(serializer)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        deserializer: D,
    ) -> Result<Option<(T, OffsetDateTime)>, D::Error> {
        let value = Option::<(T, Rfc3339)>::deserialize(deserializer)?;
        Ok(value.map(|(first, Rfc3339(at))| (first, at)))
    }
}

/// `Vec<OffsetDateTime>` as `["<RFC 3339>", …]`.
pub(crate) mod vec {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        value: &[OffsetDateTime],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(value.iter().map(|at| Rfc3339(*at)))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<OffsetDateTime>, D::Error> {
        let value = Vec::<Rfc3339>::deserialize(deserializer)?;
        Ok(value.into_iter().map(|Rfc3339(at)| at).collect())
    }
}
