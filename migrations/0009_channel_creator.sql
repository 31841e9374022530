-- The person who created a channel through the API, until they have been joined to its
-- Matrix room, made its admin, and `messaging.channel.created` has been written. A channel
-- created while Synapse was unavailable gets its Matrix room later, from the reconciler;
-- its creator must still end up its admin, and the event must name the Matrix room.
-- Both are cleared (NULL) once that is done; rooms made otherwise never have them.
ALTER TABLE city_rooms
    ADD COLUMN creator_user_id text,  -- the creator's Matrix user id
    ADD COLUMN creator_sub text;      -- the creator's JWT subject, the event's `created_by`
