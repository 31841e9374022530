//! Folds membership, presence and typing events into per-room presence states.
//!
//! Online counts are kept incrementally and a reverse index maps each user to the
//! rooms they have joined, so a presence update costs time in the number of rooms
//! that user is in, not in the size of the city.

use std::collections::{HashMap, HashSet};

use ruma::events::room::member::MembershipState;
use serde::{Deserialize, Serialize};

pub use super::wire::{RoomPresence, RoomSummary, UserPresenceEvent};

/// A user's presence as Matrix reports it: the three states of ruma's [`PresenceState`]
/// that the spec defines, as a closed, `Copy` set (the aggregator keeps one per user). A
/// state outside them ([`PresenceState`]'s custom values) is not one of ours: see
/// [`PresenceStatus::of`].
///
/// [`PresenceState`]: ruma::presence::PresenceState
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceStatus {
    /// Active right now.
    Online,
    /// Connected but idle or away.
    Unavailable,
    /// Not connected, or never seen.
    Offline,
}

impl PresenceStatus {
    /// The status of a state Matrix reports; `None` for a state the spec does not define.
    pub fn of(state: &ruma::presence::PresenceState) -> Option<Self> {
        Self::parse(state.as_str())
    }

    /// Parses the `presence` field of an `m.presence` event; unknown values give `None`
    /// so that a future status is not silently taken for one of ours.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "online" => Some(Self::Online),
            "unavailable" => Some(Self::Unavailable),
            "offline" => Some(Self::Offline),
            _ => None,
        }
    }

    /// The wire name, as in `m.presence` events (and [`PresenceState::as_str`]).
    ///
    /// [`PresenceState::as_str`]: ruma::presence::PresenceState::as_str
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Unavailable => "unavailable",
            Self::Offline => "offline",
        }
    }
}

impl From<PresenceStatus> for ruma::presence::PresenceState {
    fn from(status: PresenceStatus) -> Self {
        match status {
            PresenceStatus::Online => Self::Online,
            PresenceStatus::Unavailable => Self::Unavailable,
            PresenceStatus::Offline => Self::Offline,
        }
    }
}

/// The last presence known for a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserPresence {
    /// Status from the latest `m.presence` event.
    pub status: PresenceStatus,
    /// Last activity, in milliseconds since the Unix epoch.
    pub last_active_ts: u64,
}

/// What one presence update changed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PresenceChange {
    /// Set when the user's status differs from the one known before.
    pub user: Option<UserPresenceEvent>,
    /// Every mapped room the user has joined whose online count changed, sorted by slug.
    pub rooms: Vec<RoomPresence>,
}

#[derive(Debug, Clone)]
struct RoomState {
    slug: String,
    alias: Option<String>,
    members: HashSet<String>,
    typing: Vec<String>,
    last_event_ts: Option<u64>,
    /// Cached so that reads and presence updates never walk the member list.
    online_count: usize,
}

impl RoomState {
    fn presence(&self, matrix_room_id: &str) -> RoomPresence {
        RoomPresence {
            room_slug: self.slug.clone(),
            matrix_room_id: matrix_room_id.to_owned(),
            matrix_room_alias: self.alias.clone(),
            online_count: self.online_count,
            typing_count: self.typing.len(),
            typing_users: self.typing.clone(),
            last_event_ts: self.last_event_ts,
        }
    }
}

/// Presence of every mapped city room, built from Matrix events.
///
/// Events for rooms that are not mapped are ignored: a room's members must be
/// loaded with [`PresenceAggregator::set_members`] once it is mapped.
#[derive(Debug, Clone)]
pub struct PresenceAggregator {
    sender: String,
    users: HashMap<String, UserPresence>,
    rooms: HashMap<String, RoomState>,
    /// user id -> mapped rooms the user has joined.
    joined: HashMap<String, HashSet<String>>,
}

/// Whether `user_id` adds to online counts. The appservice's own user is in every
/// room, so counting it would make every room look occupied.
fn counts_online(users: &HashMap<String, UserPresence>, sender: &str, user_id: &str) -> bool {
    user_id != sender
        && users
            .get(user_id)
            .is_some_and(|u| u.status == PresenceStatus::Online)
}

fn same_set(a: &[String], b: &[String]) -> bool {
    let a: HashSet<&str> = a.iter().map(String::as_str).collect();
    let b: HashSet<&str> = b.iter().map(String::as_str).collect();
    a == b
}

impl PresenceAggregator {
    /// An empty aggregator; `sender` is the appservice's own user id.
    pub fn new(sender: impl Into<String>) -> Self {
        Self {
            sender: sender.into(),
            users: HashMap::new(),
            rooms: HashMap::new(),
            joined: HashMap::new(),
        }
    }

    /// Maps a Matrix room to a city room, or updates the slug and alias of an
    /// existing mapping while keeping what is known about its members.
    pub fn map_room(
        &mut self,
        matrix_room_id: impl Into<String>,
        slug: impl Into<String>,
        alias: Option<String>,
    ) {
        let slug = slug.into();
        match self.rooms.entry(matrix_room_id.into()) {
            std::collections::hash_map::Entry::Occupied(mut entry) => {
                let room = entry.get_mut();
                room.slug = slug;
                room.alias = alias;
            }
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(RoomState {
                    slug,
                    alias,
                    members: HashSet::new(),
                    typing: Vec::new(),
                    last_event_ts: None,
                    online_count: 0,
                });
            }
        }
    }

    /// Forgets a mapped room and everything known about it.
    pub fn unmap_room(&mut self, matrix_room_id: &str) {
        let Some(room) = self.rooms.remove(matrix_room_id) else {
            return;
        };
        for member in &room.members {
            self.unindex(member, matrix_room_id);
        }
    }

    /// Replaces the joined members of a room, as when rebuilding state on start.
    ///
    /// Typing users who are no longer members are dropped, as a leave would.
    /// Returns the new state if the online count or the typing set changed.
    pub fn set_members(
        &mut self,
        matrix_room_id: &str,
        members: impl IntoIterator<Item = String>,
    ) -> Option<RoomPresence> {
        let room = self.rooms.get_mut(matrix_room_id)?;
        let members: HashSet<String> = members.into_iter().collect();
        let old = std::mem::replace(&mut room.members, members);

        for gone in old.difference(&room.members) {
            if let Some(rooms) = self.joined.get_mut(gone) {
                rooms.remove(matrix_room_id);
                if rooms.is_empty() {
                    self.joined.remove(gone);
                }
            }
        }
        for added in room.members.difference(&old) {
            self.joined
                .entry(added.clone())
                .or_default()
                .insert(matrix_room_id.to_owned());
        }

        let before = room.online_count;
        room.online_count = room
            .members
            .iter()
            .filter(|m| counts_online(&self.users, &self.sender, m))
            .count();
        let typing_before = room.typing.len();
        let members = &room.members;
        room.typing.retain(|u| members.contains(u));

        (room.online_count != before || room.typing.len() != typing_before)
            .then(|| room.presence(matrix_room_id))
    }

    /// Applies an `m.room.member` event: `join` adds the user, any other membership
    /// removes them and their typing notice.
    ///
    /// Returns the new state if the online count or the typing set changed.
    pub fn apply_membership(
        &mut self,
        matrix_room_id: &str,
        user_id: &str,
        membership: &MembershipState,
    ) -> Option<RoomPresence> {
        let room = self.rooms.get_mut(matrix_room_id)?;
        let online = counts_online(&self.users, &self.sender, user_id);

        if *membership == MembershipState::Join {
            if !room.members.insert(user_id.to_owned()) {
                return None;
            }
            self.joined
                .entry(user_id.to_owned())
                .or_default()
                .insert(matrix_room_id.to_owned());
            if !online {
                return None;
            }
            room.online_count += 1;
            return Some(room.presence(matrix_room_id));
        }

        let was_member = room.members.remove(user_id);
        let typing_before = room.typing.len();
        room.typing.retain(|u| u != user_id);
        let typing_changed = room.typing.len() != typing_before;
        let count_changed = was_member && online;
        if count_changed {
            room.online_count -= 1;
        }
        let changed = (count_changed || typing_changed).then(|| room.presence(matrix_room_id));
        if was_member {
            self.unindex(user_id, matrix_room_id);
        }
        changed
    }

    /// Applies an `m.presence` event.
    pub fn apply_presence(
        &mut self,
        user_id: &str,
        status: PresenceStatus,
        last_active_ts: u64,
    ) -> PresenceChange {
        let was_online = counts_online(&self.users, &self.sender, user_id);
        let update = UserPresence {
            status,
            last_active_ts,
        };
        // A user never seen is offline, so a first "offline" is not news.
        let previous = match self.users.get_mut(user_id) {
            Some(known) => std::mem::replace(known, update).status,
            None => {
                self.users.insert(user_id.to_owned(), update);
                PresenceStatus::Offline
            }
        };
        let is_online = counts_online(&self.users, &self.sender, user_id);

        let user = (previous != status).then(|| UserPresenceEvent {
            matrix_user_id: user_id.to_owned(),
            status,
            last_active_ts,
        });

        let mut rooms = Vec::new();
        if was_online != is_online
            && let Some(room_ids) = self.joined.get(user_id)
        {
            for room_id in room_ids {
                let Some(room) = self.rooms.get_mut(room_id) else {
                    continue;
                };
                if is_online {
                    room.online_count += 1;
                } else {
                    room.online_count = room.online_count.saturating_sub(1);
                }
                rooms.push(room.presence(room_id));
            }
            sort_by_slug(&mut rooms);
        }

        PresenceChange { user, rooms }
    }

    /// Applies an `m.typing` event, whose list replaces the previous one.
    ///
    /// Returns the new state only if the set of typing users changed; a reordering
    /// alone is kept but not reported.
    pub fn apply_typing(
        &mut self,
        matrix_room_id: &str,
        user_ids: Vec<String>,
    ) -> Option<RoomPresence> {
        let room = self.rooms.get_mut(matrix_room_id)?;
        let mut seen = HashSet::with_capacity(user_ids.len());
        let typing: Vec<String> = user_ids
            .into_iter()
            .filter(|u| seen.insert(u.clone()))
            .collect();
        let changed = !same_set(&room.typing, &typing);
        room.typing = typing;
        changed.then(|| room.presence(matrix_room_id))
    }

    /// Records activity in a room. Not reported on its own: the timestamp rides along
    /// with the next published change.
    pub fn touch(&mut self, matrix_room_id: &str, ts: u64) {
        if let Some(room) = self.rooms.get_mut(matrix_room_id) {
            room.last_event_ts = Some(room.last_event_ts.map_or(ts, |old| old.max(ts)));
        }
    }

    /// Current state of a mapped room.
    pub fn room(&self, matrix_room_id: &str) -> Option<RoomPresence> {
        self.rooms
            .get(matrix_room_id)
            .map(|room| room.presence(matrix_room_id))
    }

    /// Current state of the room mapped to `slug`. Slug lookups are rare and rooms
    /// few, so a scan is preferred over an index that would have to follow remaps;
    /// if two rooms share a slug, the smallest Matrix room id wins.
    pub fn room_by_slug(&self, slug: &str) -> Option<RoomPresence> {
        self.rooms
            .iter()
            .filter(|(_, room)| room.slug == slug)
            .min_by(|a, b| a.0.cmp(b.0))
            .map(|(id, room)| room.presence(id))
    }

    /// States of all mapped rooms, sorted by slug.
    pub fn snapshot(&self) -> Vec<RoomPresence> {
        let mut rooms: Vec<RoomPresence> = self
            .rooms
            .iter()
            .map(|(id, room)| room.presence(id))
            .collect();
        sort_by_slug(&mut rooms);
        rooms
    }

    /// Last presence known for a user.
    pub fn user(&self, user_id: &str) -> Option<UserPresence> {
        self.users.get(user_id).copied()
    }

    fn unindex(&mut self, user_id: &str, matrix_room_id: &str) {
        if let Some(rooms) = self.joined.get_mut(user_id) {
            rooms.remove(matrix_room_id);
            if rooms.is_empty() {
                self.joined.remove(user_id);
            }
        }
    }
}

/// Ties on slug fall back to the room id so output never depends on hash order.
fn sort_by_slug(rooms: &mut [RoomPresence]) {
    rooms.sort_by(|a, b| {
        a.room_slug
            .cmp(&b.room_slug)
            .then_with(|| a.matrix_room_id.cmp(&b.matrix_room_id))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BOT: &str = "@city:srv";

    fn s(v: &str) -> String {
        v.to_owned()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| s(x)).collect()
    }

    /// Two rooms; `@a` is in both, `@b` only in energy, the bot in both.
    fn city() -> PresenceAggregator {
        let mut agg = PresenceAggregator::new(BOT);
        agg.map_room("!e:srv", "energy", Some(s("#city_energy:srv")));
        agg.map_room("!g:srv", "general", None);
        agg.set_members("!e:srv", strings(&["@a:srv", "@b:srv", BOT]));
        agg.set_members("!g:srv", strings(&["@a:srv", BOT]));
        agg
    }

    fn count(agg: &PresenceAggregator, room: &str) -> usize {
        agg.room(room).expect("room is mapped").online_count
    }

    /// The cached counts must match a count from scratch.
    fn assert_counts_consistent(agg: &PresenceAggregator) {
        for (id, room) in &agg.rooms {
            let fresh = room
                .members
                .iter()
                .filter(|m| counts_online(&agg.users, &agg.sender, m))
                .count();
            assert_eq!(room.online_count, fresh, "room {id}");
        }
    }

    #[test]
    fn parse_status() {
        assert_eq!(
            PresenceStatus::parse("online"),
            Some(PresenceStatus::Online)
        );
        assert_eq!(
            PresenceStatus::parse("unavailable"),
            Some(PresenceStatus::Unavailable)
        );
        assert_eq!(
            PresenceStatus::parse("offline"),
            Some(PresenceStatus::Offline)
        );
        assert_eq!(PresenceStatus::parse("busy"), None);
        assert_eq!(PresenceStatus::Unavailable.as_str(), "unavailable");
    }

    #[test]
    fn online_count_excludes_sender_and_non_members() {
        let mut agg = city();
        agg.apply_presence(BOT, PresenceStatus::Online, 1);
        agg.apply_presence("@outsider:srv", PresenceStatus::Online, 1);
        assert_eq!(count(&agg, "!e:srv"), 0);

        agg.apply_presence("@a:srv", PresenceStatus::Online, 2);
        agg.apply_presence("@b:srv", PresenceStatus::Unavailable, 2);
        assert_eq!(count(&agg, "!e:srv"), 1);
        assert_eq!(count(&agg, "!g:srv"), 1);
        assert_counts_consistent(&agg);
    }

    #[test]
    fn members_without_known_presence_are_offline() {
        let agg = city();
        assert_eq!(count(&agg, "!e:srv"), 0);
    }

    #[test]
    fn set_members_counts_known_presence_and_reports_change() {
        let mut agg = PresenceAggregator::new(BOT);
        agg.apply_presence("@a:srv", PresenceStatus::Online, 1);
        agg.map_room("!e:srv", "energy", None);
        let p = agg
            .set_members("!e:srv", strings(&["@a:srv", BOT]))
            .expect("count went from 0 to 1");
        assert_eq!(p.online_count, 1);
        assert_eq!(agg.set_members("!e:srv", strings(&["@a:srv"])), None);
        assert_eq!(agg.set_members("!nope:srv", strings(&["@a:srv"])), None);
    }

    #[test]
    fn presence_change_reports_only_joined_rooms_whose_count_changed() {
        let mut agg = city();
        let change = agg.apply_presence("@b:srv", PresenceStatus::Online, 10);
        assert_eq!(
            change.user,
            Some(UserPresenceEvent {
                matrix_user_id: s("@b:srv"),
                status: PresenceStatus::Online,
                last_active_ts: 10,
            })
        );
        let slugs: Vec<_> = change.rooms.iter().map(|r| r.room_slug.as_str()).collect();
        assert_eq!(slugs, ["energy"]);
        assert_eq!(change.rooms[0].online_count, 1);

        let change = agg.apply_presence("@a:srv", PresenceStatus::Online, 11);
        let slugs: Vec<_> = change.rooms.iter().map(|r| r.room_slug.as_str()).collect();
        assert_eq!(slugs, ["energy", "general"]);

        // Online -> unavailable changes the status but also the count.
        let change = agg.apply_presence("@a:srv", PresenceStatus::Unavailable, 12);
        assert!(change.user.is_some());
        assert_eq!(change.rooms.len(), 2);

        // Unavailable -> offline changes the status but not any count.
        let change = agg.apply_presence("@a:srv", PresenceStatus::Offline, 13);
        assert!(change.user.is_some());
        assert!(change.rooms.is_empty());

        // Same status again: nothing to report, but the timestamp is kept.
        let change = agg.apply_presence("@a:srv", PresenceStatus::Offline, 14);
        assert_eq!(change, PresenceChange::default());
        assert_eq!(agg.user("@a:srv").map(|u| u.last_active_ts), Some(14));
        assert_counts_consistent(&agg);
    }

    #[test]
    fn presence_of_outsiders_and_sender_changes_no_room() {
        let mut agg = city();
        let change = agg.apply_presence("@outsider:srv", PresenceStatus::Online, 1);
        assert!(change.user.is_some());
        assert!(change.rooms.is_empty());
        let change = agg.apply_presence(BOT, PresenceStatus::Online, 1);
        assert!(change.rooms.is_empty());
    }

    #[test]
    fn first_offline_is_not_a_status_change() {
        let mut agg = city();
        let change = agg.apply_presence("@a:srv", PresenceStatus::Offline, 1);
        assert_eq!(change, PresenceChange::default());
    }

    #[test]
    fn join_and_leave_change_counts_and_leave_clears_typing() {
        let mut agg = city();
        agg.apply_presence("@c:srv", PresenceStatus::Online, 1);
        let p = agg
            .apply_membership("!g:srv", "@c:srv", &MembershipState::Join)
            .expect("online user joined");
        assert_eq!(p.online_count, 1);
        assert_eq!(
            agg.apply_membership("!g:srv", "@c:srv", &MembershipState::Join),
            None
        );

        // Presence now reaches the newly joined room through the reverse index.
        let change = agg.apply_presence("@c:srv", PresenceStatus::Offline, 2);
        assert_eq!(change.rooms.len(), 1);
        agg.apply_presence("@c:srv", PresenceStatus::Online, 3);

        agg.apply_typing("!g:srv", strings(&["@c:srv", "@a:srv"]));
        let p = agg
            .apply_membership("!g:srv", "@c:srv", &MembershipState::Leave)
            .expect("count and typing changed");
        assert_eq!(p.online_count, 0);
        assert_eq!(p.typing_users, strings(&["@a:srv"]));
        assert_eq!(p.typing_count, 1);

        // After leaving, presence no longer reaches the room.
        let change = agg.apply_presence("@c:srv", PresenceStatus::Offline, 4);
        assert!(change.rooms.is_empty());
        assert_counts_consistent(&agg);
    }

    #[test]
    fn leave_of_offline_user_reports_only_typing_change() {
        let mut agg = city();
        assert_eq!(
            agg.apply_membership("!e:srv", "@b:srv", &MembershipState::Ban),
            None
        );
        agg.apply_typing("!e:srv", strings(&["@a:srv"]));
        let p = agg
            .apply_membership("!e:srv", "@a:srv", &MembershipState::Leave)
            .expect("typing changed");
        assert_eq!(p.typing_count, 0);
        assert_eq!(p.online_count, 0);
        // Joining offline changes nothing visible.
        assert_eq!(
            agg.apply_membership("!e:srv", "@a:srv", &MembershipState::Join),
            None
        );
    }

    #[test]
    fn typing_changes_are_detected_as_sets() {
        let mut agg = city();
        let p = agg
            .apply_typing("!e:srv", strings(&["@a:srv", "@b:srv"]))
            .expect("new typers");
        assert_eq!(p.typing_users, strings(&["@a:srv", "@b:srv"]));
        assert_eq!(p.typing_count, 2);

        assert_eq!(
            agg.apply_typing("!e:srv", strings(&["@b:srv", "@a:srv"])),
            None
        );
        // The new order is kept for the next publication.
        assert_eq!(
            agg.room("!e:srv").map(|r| r.typing_users),
            Some(strings(&["@b:srv", "@a:srv"]))
        );

        let p = agg
            .apply_typing("!e:srv", strings(&["@b:srv"]))
            .expect("one stopped");
        assert_eq!(p.typing_count, 1);
        assert!(agg.apply_typing("!e:srv", Vec::new()).is_some());
        assert_eq!(agg.apply_typing("!e:srv", Vec::new()), None);
    }

    #[test]
    fn unknown_rooms_are_ignored() {
        let mut agg = city();
        assert_eq!(
            agg.apply_membership("!x:srv", "@z:srv", &MembershipState::Join),
            None
        );
        assert_eq!(agg.apply_typing("!x:srv", strings(&["@a:srv"])), None);
        assert_eq!(agg.set_members("!x:srv", strings(&["@a:srv"])), None);
        agg.touch("!x:srv", 5);
        agg.unmap_room("!x:srv");
        assert_eq!(agg.room("!x:srv"), None);
        assert_eq!(agg.room_by_slug("nowhere"), None);
        // A join in an unmapped room must not leak into presence results.
        let change = agg.apply_presence("@z:srv", PresenceStatus::Online, 1);
        assert!(change.rooms.is_empty());
        assert_eq!(agg.snapshot().len(), 2);
    }

    #[test]
    fn unmap_drops_room_from_presence_updates() {
        let mut agg = city();
        agg.unmap_room("!e:srv");
        let change = agg.apply_presence("@a:srv", PresenceStatus::Online, 1);
        let slugs: Vec<_> = change.rooms.iter().map(|r| r.room_slug.as_str()).collect();
        assert_eq!(slugs, ["general"]);
        assert!(!agg.joined.contains_key("@b:srv"));
    }

    #[test]
    fn remap_keeps_members_and_updates_slug() {
        let mut agg = city();
        agg.apply_presence("@a:srv", PresenceStatus::Online, 1);
        agg.map_room("!e:srv", "power", Some(s("#city_power:srv")));
        let p = agg.room_by_slug("power").expect("renamed room");
        assert_eq!(p.matrix_room_id, "!e:srv");
        assert_eq!(p.online_count, 1);
        assert_eq!(p.matrix_room_alias.as_deref(), Some("#city_power:srv"));
        assert_eq!(agg.room_by_slug("energy"), None);
    }

    #[test]
    fn touch_keeps_latest_timestamp() {
        let mut agg = city();
        assert_eq!(agg.room("!e:srv").and_then(|r| r.last_event_ts), None);
        agg.touch("!e:srv", 20);
        agg.touch("!e:srv", 10);
        assert_eq!(agg.room("!e:srv").and_then(|r| r.last_event_ts), Some(20));
    }

    #[test]
    fn snapshot_is_sorted_by_slug() {
        let mut agg = PresenceAggregator::new(BOT);
        for (id, slug) in [
            ("!1:srv", "water"),
            ("!2:srv", "energy"),
            ("!3:srv", "general"),
        ] {
            agg.map_room(id, slug, None);
        }
        let slugs: Vec<_> = agg.snapshot().into_iter().map(|r| r.room_slug).collect();
        assert_eq!(slugs, ["energy", "general", "water"]);
    }

    fn sample_room() -> RoomPresence {
        RoomPresence {
            room_slug: s("energy"),
            matrix_room_id: s("!x:srv"),
            matrix_room_alias: Some(s("#city_energy:srv")),
            online_count: 5,
            typing_count: 1,
            typing_users: strings(&["@user1:srv"]),
            last_event_ts: Some(1_732_610_000_000),
        }
    }

    #[test]
    fn room_presence_json() {
        let room = sample_room();
        assert_eq!(
            serde_json::to_value(&room).expect("serialisable"),
            json!({
                "type": "room.presence",
                "room_slug": "energy",
                "matrix_room_id": "!x:srv",
                "matrix_room_alias": "#city_energy:srv",
                "online_count": 5,
                "typing_count": 1,
                "typing_users": ["@user1:srv"],
                "last_event_ts": 1_732_610_000_000_u64
            })
        );
        // Field order is part of the contract.
        assert_eq!(
            serde_json::to_string(&room).expect("serialisable"),
            r##"{"type":"room.presence","room_slug":"energy","matrix_room_id":"!x:srv","matrix_room_alias":"#city_energy:srv","online_count":5,"typing_count":1,"typing_users":["@user1:srv"],"last_event_ts":1732610000000}"##
        );
    }

    #[test]
    fn room_presence_json_unknowns_are_null() {
        let room = RoomPresence {
            matrix_room_alias: None,
            last_event_ts: None,
            typing_count: 0,
            typing_users: Vec::new(),
            ..sample_room()
        };
        assert_eq!(
            serde_json::to_value(&room).expect("serialisable"),
            json!({
                "type": "room.presence",
                "room_slug": "energy",
                "matrix_room_id": "!x:srv",
                "matrix_room_alias": null,
                "online_count": 5,
                "typing_count": 0,
                "typing_users": [],
                "last_event_ts": null
            })
        );
    }

    #[test]
    fn user_presence_json_and_localpart() {
        let event = UserPresenceEvent {
            matrix_user_id: s("@user1:srv"),
            status: PresenceStatus::Online,
            last_active_ts: 1_732_610_000_000,
        };
        assert_eq!(
            serde_json::to_value(&event).expect("serialisable"),
            json!({
                "type": "user.presence",
                "matrix_user_id": "@user1:srv",
                "status": "online",
                "last_active_ts": 1_732_610_000_000_u64
            })
        );
        assert_eq!(
            serde_json::to_string(&event).expect("serialisable"),
            r#"{"type":"user.presence","matrix_user_id":"@user1:srv","status":"online","last_active_ts":1732610000000}"#
        );
    }

    #[test]
    fn summary_json() {
        let summary = RoomPresence {
            room_slug: s("general"),
            online_count: 3,
            typing_count: 0,
            typing_users: Vec::new(),
            ..sample_room()
        }
        .summary();
        assert_eq!(
            serde_json::to_value(&summary).expect("serialisable"),
            json!({"room_slug": "general", "online_count": 3, "typing_count": 0})
        );
        assert_eq!(
            serde_json::to_string(&summary).expect("serialisable"),
            r#"{"room_slug":"general","online_count":3,"typing_count":0}"#
        );
    }
}
