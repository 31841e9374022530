-- Media messages (m.image, m.video, m.audio, m.file): what the message carries, as the
-- API shows it ({mxc, mimetype, size, name, width, height, duration}; null fields when
-- the event does not say). NULL for text, and cleared when the message is redacted.
ALTER TABLE messages ADD COLUMN media JSONB;
-- The download endpoint serves a file only to those who may read a channel where it was
-- posted: found by its mxc URI.
CREATE INDEX messages_media_mxc ON messages ((media->>'mxc')) WHERE media IS NOT NULL;
