-- The city as a Matrix Space: `#city:<server>` lists the public city rooms, and a
-- sub-space per microDAO (`#city_microdao.<id>:<server>`, itself in the city's Space)
-- lists the microDAO's public channels.

-- The Spaces the bridge made. The alias stays the source of truth: a lost row is found
-- again by it (createRoom answers M_ROOM_IN_USE and the room is adopted), so a restart
-- never makes a second Space; the row only saves resolving the alias each time.
CREATE TABLE city_spaces (
    -- The microDAO whose channels the Space lists; '' for the city's own Space.
    microdao_id    TEXT PRIMARY KEY,
    matrix_room_id TEXT NOT NULL UNIQUE,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The Space whose `m.space.child` lists the room, as the bridge last set it (NULL: none).
-- The reconciler compares it with where the room belongs (public, not archived, with a
-- Matrix room: its microDAO's Space or the city's) and sends only what differs.
ALTER TABLE city_rooms ADD COLUMN space_room_id TEXT;
