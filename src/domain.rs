//! The city's own vocabulary, validated once at the edge: slugs, city room ids, agent ids,
//! visibility, and how each maps onto Matrix ids. Everything past the edge takes these
//! types, not strings; SQL binds `as_str()`.

pub mod events;
mod slugify;

use std::fmt;

use ruma::{OwnedRoomAliasId, OwnedUserId, RoomAliasId, ServerName, UserId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use self::slugify::slugify;

/// Localpart prefix of city room aliases: `#city_<slug>:<server>`.
pub const CITY_ALIAS_PREFIX: &str = "city_";
/// Prefix of city room ids: `room_city_<slug>`.
pub const CITY_ROOM_ID_PREFIX: &str = "room_city_";
/// Localpart prefix of agent users: `@agent_<name>:<server>`.
pub const AGENT_LOCALPART_PREFIX: &str = "agent_";
/// Prefix of agent ids: `agent:<name>`.
pub const AGENT_ID_PREFIX: &str = "agent:";
/// Prefix of DAARION user ids: `user:<localpart>`.
pub const USER_ID_PREFIX: &str = "user:";
/// What the Matrix room name is prefixed with; the city room name is kept without it.
pub const ROOM_NAME_PREFIX: &str = "DAARION City — ";
/// Localpart of the city Space's alias: `#city:<server>` (outside the slugs' `#city_*`).
pub const CITY_SPACE_ALIAS_LOCALPART: &str = "city";
/// Name of the city Space.
pub const CITY_SPACE_NAME: &str = "DAARION City";
/// Localpart prefix of a microDAO's sub-space alias: `#city_microdao.<id>:<server>`. A
/// slug never holds a `.`, so no city room alias can be one of these.
pub const MICRODAO_SPACE_ALIAS_PREFIX: &str = "city_microdao.";
/// Longest slug.
pub const MAX_SLUG: usize = 64;
/// Longest city room name, in characters (the `city_rooms.name` check).
pub const MAX_NAME_CHARS: usize = 100;

/// A value that is not what its type requires.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub &'static str);

/// A city room's URL name: `^[a-z0-9][a-z0-9_-]{0,63}$` (the one place this rule lives,
/// migrations aside).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Slug(String);

impl Slug {
    /// What a slug must look like, for error messages.
    pub const RULE: &'static str = "must match ^[a-z0-9][a-z0-9_-]{0,63}$";

    /// Validates `value`.
    pub fn parse(value: impl Into<String>) -> Result<Self, Invalid> {
        let value = value.into();
        let bytes = value.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= MAX_SLUG
            && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-');
        if valid {
            Ok(Self(value))
        } else {
            Err(Invalid(Self::RULE))
        }
    }

    /// The slug of a `#city_<slug>:<server>` alias, if it is one of ours.
    pub fn of_alias(alias: &RoomAliasId, server: &ServerName) -> Option<Self> {
        if alias.server_name() != server {
            return None;
        }
        Self::parse(alias.alias().strip_prefix(CITY_ALIAS_PREFIX)?).ok()
    }

    /// `#city_<slug>:<server>`.
    pub fn alias(&self, server: &ServerName) -> OwnedRoomAliasId {
        RoomAliasId::parse(format!("#{}:{server}", self.alias_localpart()))
            .expect("a valid slug makes a valid alias")
    }

    /// `city_<slug>`, the alias localpart.
    pub fn alias_localpart(&self) -> String {
        format!("{CITY_ALIAS_PREFIX}{}", self.0)
    }

    /// `room_city_<slug>`.
    pub fn city_room_id(&self) -> CityRoomId {
        CityRoomId(format!("{CITY_ROOM_ID_PREFIX}{}", self.0))
    }

    /// The slug.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Slug {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Slug {
    type Error = Invalid;

    fn try_from(value: String) -> Result<Self, Invalid> {
        Self::parse(value)
    }
}

impl<'de> Deserialize<'de> for Slug {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A city room's DAARION id, `room_city_<slug>`; other services refer to rooms by it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct CityRoomId(String);

impl CityRoomId {
    /// Validates `value` (`room_city_` and a valid slug).
    pub fn parse(value: impl Into<String>) -> Result<Self, Invalid> {
        let value = value.into();
        match value.strip_prefix(CITY_ROOM_ID_PREFIX).map(Slug::parse) {
            Some(Ok(_)) => Ok(Self(value)),
            _ => Err(Invalid("must be room_city_<slug>")),
        }
    }

    /// The slug it was made from.
    pub fn slug(&self) -> Slug {
        Slug(self.0[CITY_ROOM_ID_PREFIX.len()..].to_owned())
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CityRoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for CityRoomId {
    type Error = Invalid;

    fn try_from(value: String) -> Result<Self, Invalid> {
        Self::parse(value)
    }
}

/// An AI agent of the platform, `agent:<name>`, whose Matrix user is
/// `@agent_<name>:<server>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct AgentId(String);

impl AgentId {
    /// Validates `value`: `agent:` and a name that is a valid Matrix localpart
    /// (`[a-z0-9._=/+-]+`, as the `agents` table checks).
    pub fn parse(value: impl Into<String>) -> Result<Self, Invalid> {
        let value = value.into();
        let valid = value.strip_prefix(AGENT_ID_PREFIX).is_some_and(|name| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._=/+-".contains(&b))
        });
        if valid {
            Ok(Self(value))
        } else {
            Err(Invalid(
                "must be agent:<name> with a name of [a-z0-9._=/+-]",
            ))
        }
    }

    /// The agent of a Matrix user in the agent namespace of `server`.
    pub fn of_user(user: &UserId, server: &ServerName) -> Option<Self> {
        if user.server_name() != server {
            return None;
        }
        let name = user.localpart().strip_prefix(AGENT_LOCALPART_PREFIX)?;
        Self::parse(format!("{AGENT_ID_PREFIX}{name}")).ok()
    }

    /// The name, after `agent:`.
    pub fn name(&self) -> &str {
        &self.0[AGENT_ID_PREFIX.len()..]
    }

    /// `@agent_<name>:<server>`.
    pub fn user_id(&self, server: &ServerName) -> OwnedUserId {
        UserId::parse_with_server_name(format!("{AGENT_LOCALPART_PREFIX}{}", self.name()), server)
            .expect("a valid agent name makes a valid localpart")
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for AgentId {
    type Error = Invalid;

    fn try_from(value: String) -> Result<Self, Invalid> {
        Self::parse(value)
    }
}

/// The rule of the name in a `user:<name>` subject, for error messages.
pub const LOCALPART_RULE: &str = "the name in user:<name> must be a Matrix localpart: \
     one or more of a-z 0-9 . _ = - / (lowercase ASCII; no @ or :)";
/// The rule of a whole Matrix user id's length, for error messages.
pub const USER_ID_LENGTH_RULE: &str = "@<name>:<server> must be at most 255 bytes";
/// Longest Matrix user id, in bytes (the Matrix specification's limit).
pub const MAX_USER_ID_BYTES: usize = 255;

/// A person of `server` named `localpart`, if the localpart is fully conforming (the
/// Matrix rule for new users: `a-z 0-9 . _ = - /`, nothing else) and the whole id fits in
/// 255 bytes. Synapse does not check the names an appservice registers, so this is the
/// only check a name from a JWT gets before its account is created.
pub fn local_user_id(localpart: &str, server: &ServerName) -> Result<OwnedUserId, Invalid> {
    let conforming = !localpart.is_empty()
        && localpart
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._=-/".contains(&b));
    if !conforming {
        return Err(Invalid(LOCALPART_RULE));
    }
    if 1 + localpart.len() + 1 + server.as_str().len() > MAX_USER_ID_BYTES {
        return Err(Invalid(USER_ID_LENGTH_RULE));
    }
    UserId::parse_with_server_name(localpart, server).map_err(|_| Invalid(LOCALPART_RULE))
}

/// The alias localpart of the Space of a microDAO (`None`: the city's own Space). An id
/// that follows the slug rule is kept as it is (`city_microdao.<id>`); any other (up to
/// 200 characters of anything) is named by its SHA-256 (`city_microdao.sha256.<hex>`), which
/// the first form cannot be (it has one `.`): two microDAOs never share a Space.
pub fn space_alias_localpart(microdao_id: Option<&str>) -> String {
    let Some(id) = microdao_id else {
        return CITY_SPACE_ALIAS_LOCALPART.to_owned();
    };
    if Slug::parse(id).is_ok() {
        return format!("{MICRODAO_SPACE_ALIAS_PREFIX}{id}");
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{MICRODAO_SPACE_ALIAS_PREFIX}sha256.{hex}")
}

/// The alias of the Space of a microDAO (`None`: the city's own, `#city:<server>`).
pub fn space_alias(microdao_id: Option<&str>, server: &ServerName) -> OwnedRoomAliasId {
    RoomAliasId::parse(format!("#{}:{server}", space_alias_localpart(microdao_id)))
        .expect("a Space alias localpart has no ':' and is short")
}

/// Who may see and join a city room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// In the room directory, joinable by anyone.
    #[default]
    Public,
    /// Invite only, not listed.
    Private,
}

impl Visibility {
    /// The stored and sent name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Private => "private",
        }
    }
}

impl TryFrom<String> for Visibility {
    type Error = Invalid;

    fn try_from(value: String) -> Result<Self, Invalid> {
        match value.as_str() {
            "public" => Ok(Self::Public),
            "private" => Ok(Self::Private),
            _ => Err(Invalid("must be public or private")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_and_aliases() {
        let server = ServerName::parse("example.org").unwrap();
        let alias = |s: &str| RoomAliasId::parse(s).unwrap();
        let of = |s: &str| Slug::of_alias(&alias(s), &server).map(|s| s.to_string());
        assert_eq!(of("#city_general:example.org").as_deref(), Some("general"));
        assert_eq!(of("#city_general:other.org"), None);
        assert_eq!(of("#general:example.org"), None);
        assert_eq!(of("#city_Bad:example.org"), None);
        assert_eq!(of("#city_:example.org"), None);
        assert!(Slug::parse("energy-2_x").is_ok());
        assert!(Slug::parse("-energy").is_err());
        assert!(Slug::parse("a\0").is_err());
        assert!(Slug::parse("a".repeat(65)).is_err());
        let general = Slug::parse("general").unwrap();
        assert_eq!(general.alias(&server).as_str(), "#city_general:example.org");
        assert_eq!(general.city_room_id().as_str(), "room_city_general");
        assert_eq!(general.city_room_id().slug(), general);
        assert!(CityRoomId::parse("room_city_").is_err());
        assert!(serde_json::from_str::<Slug>("\"Bad\"").is_err());
    }

    #[test]
    fn space_aliases_never_meet_city_room_aliases_or_each_other() {
        let server = ServerName::parse("example.org").unwrap();
        assert_eq!(space_alias(None, &server).as_str(), "#city:example.org");
        let dao = space_alias(Some("dao-1"), &server);
        assert_eq!(dao.as_str(), "#city_microdao.dao-1:example.org");
        // Not a slug: a city room alias can never be a Space's.
        assert_eq!(Slug::of_alias(&dao, &server), None);
        let odd = space_alias(Some("ДАО: один"), &server);
        assert!(odd.as_str().starts_with("#city_microdao.sha256."), "{odd}");
        assert_eq!(odd, space_alias(Some("ДАО: один"), &server));
        assert_ne!(odd, space_alias(Some("ДАО: два"), &server));
        assert_eq!(Slug::of_alias(&odd, &server), None);
        let longest = "я".repeat(200);
        assert!(space_alias(Some(&longest), &server).as_str().len() < 255);
    }

    #[test]
    fn agent_ids_and_users() {
        let server = ServerName::parse("example.org").unwrap();
        let of = |u: &str| AgentId::of_user(&UserId::parse(u).unwrap(), &server);
        let sofia = of("@agent_sofia:example.org").unwrap();
        assert_eq!(sofia.as_str(), "agent:sofia");
        assert_eq!(sofia.user_id(&server).as_str(), "@agent_sofia:example.org");
        assert_eq!(of("@agent_:example.org"), None);
        assert_eq!(of("@sofia:example.org"), None);
        assert_eq!(of("@agent_sofia:other.org"), None);
        assert!(AgentId::parse("agent:Sofia").is_err());
        assert!(AgentId::parse("sofia").is_err());
    }

    #[test]
    fn local_users_are_fully_conforming() {
        let server = ServerName::parse("example.org").unwrap();
        let of = |l: &str| local_user_id(l, &server);
        assert_eq!(
            of("a.b_c=d-e/9").unwrap().as_str(),
            "@a.b_c=d-e/9:example.org"
        );
        for bad in [
            "",
            "Alice",
            "al!ce",
            "\u{430}lice",
            "@alice:example.org",
            "a b",
            "a:b",
        ] {
            assert_eq!(of(bad), Err(Invalid(LOCALPART_RULE)), "{bad:?}");
        }
        let longest = "x".repeat(MAX_USER_ID_BYTES - 2 - "example.org".len());
        assert!(of(&longest).is_ok());
        assert_eq!(
            of(&format!("{longest}x")),
            Err(Invalid(USER_ID_LENGTH_RULE))
        );
    }
}
