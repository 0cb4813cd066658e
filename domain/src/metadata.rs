//! Who caused an event and from where. Stored beside each event (cqrs-es keeps metadata as a
//! map of strings), never in payloads, so the facts stay about the user and the request
//! details stay separately readable, and erasable.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use crate::values::UserId;

/// Who asked for a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Actor {
    /// The user themself, with a token of theirs.
    User(UserId),
    /// An admin acting on another user.
    Admin(UserId),
    /// Someone not signed in (sign-up, login, password reset).
    Anonymous,
    /// An operator on the command line.
    Cli,
    /// The service's own configuration (for example `TWOFOLD_ADMIN_EMAILS`).
    Config,
}

/// An actor string that names no [`Actor`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` names no actor")]
pub struct UnknownActor(pub String);

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User(id) => write!(f, "user:{id}"),
            Self::Admin(id) => write!(f, "admin:{id}"),
            Self::Anonymous => f.write_str("anonymous"),
            Self::Cli => f.write_str("cli"),
            Self::Config => f.write_str("config"),
        }
    }
}

impl FromStr for Actor {
    type Err = UnknownActor;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let unknown = || UnknownActor(text.to_owned());
        let id = |id: &str| id.parse::<UserId>().map_err(|_| unknown());
        match text.split_once(':') {
            Some(("user", rest)) => id(rest).map(Self::User),
            Some(("admin", rest)) => id(rest).map(Self::Admin),
            None if text == "anonymous" => Ok(Self::Anonymous),
            None if text == "cli" => Ok(Self::Cli),
            None if text == "config" => Ok(Self::Config),
            _ => Err(unknown()),
        }
    }
}

/// The metadata of every event a command records: the actor and, for a request, its id, the
/// client's address and user agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventMetadata {
    /// Who asked.
    pub actor: Actor,
    /// The `x-request-id` of the request, which its log lines and emails carry too.
    pub request_id: Option<String>,
    /// The client's address.
    pub ip: Option<String>,
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
    /// Why, where the actor gave a reason (an erasure's, for example). Kept in clear: it must
    /// not name the person.
    pub reason: Option<String>,
}

const ACTOR: &str = "actor";
const REQUEST_ID: &str = "request_id";
const IP: &str = "ip";
const USER_AGENT: &str = "user_agent";
const REASON: &str = "reason";

impl EventMetadata {
    /// Metadata naming only the actor (the command line, the configuration).
    pub fn of(actor: Actor) -> Self {
        Self {
            actor,
            request_id: None,
            ip: None,
            user_agent: None,
            reason: None,
        }
    }

    /// This metadata with `reason`.
    pub fn because(self, reason: impl Into<String>) -> Self {
        Self {
            reason: Some(reason.into()),
            ..self
        }
    }

    /// The stored form: one string per key, absent keys left out.
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::from([(ACTOR.to_owned(), self.actor.to_string())]);
        let optional = [
            (REQUEST_ID, &self.request_id),
            (IP, &self.ip),
            (USER_AGENT, &self.user_agent),
            (REASON, &self.reason),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                map.insert(key.to_owned(), value.clone());
            }
        }
        map
    }

    /// The client address and user agent of the stored form, without reading the rest (the
    /// sessions view reads them from every refresh it folds).
    pub fn client_of(map: &HashMap<String, String>) -> (Option<String>, Option<String>) {
        (map.get(IP).cloned(), map.get(USER_AGENT).cloned())
    }

    /// The stored form read from its JSON text, keeping only what [`EventMetadata::client_of`]
    /// reads: the client's address and user agent. The other keys are skipped, not copied (a
    /// rebuild reads the metadata of every event it folds).
    pub fn client_map_of_json(text: &str) -> Result<HashMap<String, String>, serde_json::Error> {
        /// The keys [`IP`] and [`USER_AGENT`].
        #[derive(serde::Deserialize)]
        struct Client {
            ip: Option<String>,
            user_agent: Option<String>,
        }
        let client: Client = serde_json::from_str(text)?;
        Ok([(IP, client.ip), (USER_AGENT, client.user_agent)]
            .into_iter()
            .filter_map(|(key, value)| Some((key.to_owned(), value?)))
            .collect())
    }

    /// Reads the stored form back. Keys other than the five are ignored.
    pub fn from_map(map: &HashMap<String, String>) -> Result<Self, UnknownActor> {
        let actor = map
            .get(ACTOR)
            .ok_or_else(|| UnknownActor(String::new()))?
            .parse()?;
        Ok(Self {
            actor,
            request_id: map.get(REQUEST_ID).cloned(),
            ip: map.get(IP).cloned(),
            user_agent: map.get(USER_AGENT).cloned(),
            reason: map.get(REASON).cloned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserId {
        UserId::from_uuid(uuid::Uuid::from_u128(7))
    }

    #[test]
    fn every_actor_reads_back_from_its_stored_string() {
        for actor in [
            Actor::User(user()),
            Actor::Admin(user()),
            Actor::Anonymous,
            Actor::Cli,
            Actor::Config,
        ] {
            assert_eq!(actor.to_string().parse::<Actor>(), Ok(actor));
        }
    }

    #[test]
    fn stored_actor_strings_keep_their_form() {
        // Events already stored carry these strings: they must keep parsing.
        let id = "00000000-0000-0000-0000-000000000007";
        assert_eq!(Actor::User(user()).to_string(), format!("user:{id}"));
        assert_eq!(Actor::Admin(user()).to_string(), format!("admin:{id}"));
        assert_eq!(Actor::Cli.to_string(), "cli");
        assert_eq!(Actor::Anonymous.to_string(), "anonymous");
    }

    #[test]
    fn an_actor_that_names_nobody_is_refused() {
        for text in ["", "user:", "user:42", "root", "admin", "cli:x"] {
            assert!(text.parse::<Actor>().is_err(), "{text} parsed");
        }
    }

    #[test]
    fn metadata_round_trips_through_its_stored_map() {
        let metadata = EventMetadata {
            actor: Actor::User(user()),
            request_id: Some("req-1".to_owned()),
            ip: Some("192.0.2.7".to_owned()),
            user_agent: None,
            reason: Some("asked for by the user".to_owned()),
        };
        let map = metadata.to_map();
        assert_eq!(map.len(), 4);
        assert_eq!(
            EventMetadata::client_of(&map),
            (metadata.ip.clone(), metadata.user_agent.clone())
        );
        assert_eq!(EventMetadata::from_map(&map), Ok(metadata));
    }

    #[test]
    fn the_client_map_of_stored_json_keeps_the_client_alone() {
        let metadata = EventMetadata {
            actor: Actor::Anonymous,
            request_id: Some("req-2".to_owned()),
            ip: Some("192.0.2.8".to_owned()),
            user_agent: Some("curl/8".to_owned()),
            reason: Some("a reason".to_owned()),
        };
        let stored = serde_json::to_string(&metadata.to_map()).unwrap();
        let client = EventMetadata::client_map_of_json(&stored).unwrap();
        assert_eq!(client.len(), 2);
        assert_eq!(
            EventMetadata::client_of(&client),
            EventMetadata::client_of(&metadata.to_map())
        );
        let without_client = serde_json::to_string(&EventMetadata::of(Actor::Cli).to_map());
        assert!(EventMetadata::client_map_of_json(&without_client.unwrap())
            .unwrap()
            .is_empty());
        assert!(EventMetadata::client_map_of_json("[1]").is_err());
    }

    #[test]
    fn metadata_without_an_actor_is_refused() {
        assert!(EventMetadata::from_map(&HashMap::new()).is_err());
    }
}
