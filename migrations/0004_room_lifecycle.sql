-- Set when the room was stored but its Matrix room could not be created yet (Synapse
-- unavailable); the reconciler creates it and clears this.
ALTER TABLE city_rooms ADD COLUMN matrix_pending_since TIMESTAMPTZ;
-- The room's power levels before it was archived, put back when it is un-archived.
ALTER TABLE city_rooms ADD COLUMN pre_archive_power_levels JSONB;
-- At most one default room.
CREATE UNIQUE INDEX city_rooms_one_default ON city_rooms (is_default) WHERE is_default;
