-- The room's pinned events (m.room.pinned_events), as the last such state event said: in
-- pin order, at most the first 100.
ALTER TABLE city_rooms ADD COLUMN pinned_events TEXT[] NOT NULL DEFAULT '{}';
