-- The statement that indexes messages, in variants, timed on its own inside Postgres (no
-- client, no protocol, one commit at the end): how much of a row's cost is the UNNEST of
-- fourteen arrays and its sort, and how much the search index.
--
--   createdb city_lab && pg_dump -s "$DATABASE_URL" | psql -q city_lab   # the bridge's schema
--   psql -q city_lab -f bench/insert-variants.sql
--   for v in base noorder projectset nosearch; do
--     psql -q city_lab -c "TRUNCATE messages"
--     /usr/bin/time -f "$v %e s" psql -q city_lab -c "SELECT lab('$v', 300, 100)"
--   done
--
-- The search index's settings, timed on `base` the same way (16:30 UTC, 600 batches of 100,
-- two rounds): `fastupdate = off` 3.2–3.4 s against 1.2 s on; `gin_pending_list_limit` of
-- 1,024 to 65,536 kB 0.84–1.25 s, no better than the default 4,096.
--   psql -q city_lab -c "ALTER INDEX messages_search SET (fastupdate = off)"
--   psql -q city_lab -c "ALTER INDEX messages_search SET (gin_pending_list_limit = 16384)"
--
-- 300 batches of 100 rows: seconds / 30,000 rows = per row. Variants: `base` (the bridge's
-- statement: UNNEST … WITH ORDINALITY … ORDER BY n), `noorder` (no ordinality, no sort),
-- `projectset` (unnest() in the select list: no tuplestores), `nosearch` (as `base`, no
-- search vector: no GIN entry).
CREATE OR REPLACE FUNCTION lab(variant text, batches int, rows_per int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  c text[]; r text[]; e text[]; s text[]; sm text[]; st text[]; mt text[]; p text[]; t timestamptz[];
  rt text[]; th text[]; md text[]; mn text[]; sv tsvector[];
  base text := md5(random()::text);
  cols text := 'INSERT INTO messages (channel_id, matrix_room_id, matrix_event_id, sender_id, sender_matrix_id, sender_type, msgtype, content_preview, created_at, reply_to, thread_root, media, mentions, search) ';
  sql text;
BEGIN
  c := array_fill('room_city_general'::text, ARRAY[rows_per]);
  r := array_fill('!bench:localhost'::text, ARRAY[rows_per]);
  s := array_fill('user:alice'::text, ARRAY[rows_per]);
  sm := array_fill('@alice:localhost'::text, ARRAY[rows_per]);
  st := array_fill('human'::text, ARRAY[rows_per]);
  mt := array_fill('m.text'::text, ARRAY[rows_per]);
  p := array_fill('Повідомлення: the energy cooperative meets on Thursday at the square; bring your ideas for the solar roof and the shared battery.'::text, ARRAY[rows_per]);
  t := array_fill(now(), ARRAY[rows_per]);
  rt := array_fill(NULL::text, ARRAY[rows_per]);
  th := array_fill(NULL::text, ARRAY[rows_per]);
  md := array_fill(NULL::text, ARRAY[rows_per]);
  mn := array_fill(NULL::text, ARRAY[rows_per]);
  sv := array_fill(to_tsvector('simple', p[1]), ARRAY[rows_per]);
  IF variant = 'base' THEN
    sql := cols || 'SELECT c, r, e, s, sm, st, mt, p, t, rt, th, md::jsonb, string_to_array(mn, '' ''), sv
     FROM UNNEST($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) WITH ORDINALITY AS u(c, r, e, s, sm, st, mt, p, t, rt, th, md, mn, sv, n)
     ORDER BY n RETURNING matrix_event_id, seq';
  ELSIF variant = 'noorder' THEN
    sql := cols || 'SELECT c, r, e, s, sm, st, mt, p, t, rt, th, md::jsonb, string_to_array(mn, '' ''), sv
     FROM UNNEST($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) AS u(c, r, e, s, sm, st, mt, p, t, rt, th, md, mn, sv)
     RETURNING matrix_event_id, seq';
  ELSIF variant = 'projectset' THEN
    sql := cols || 'SELECT unnest($1), unnest($2), unnest($3), unnest($4), unnest($5), unnest($6), unnest($7), unnest($8), unnest($9), unnest($10), unnest($11), unnest($12)::jsonb, string_to_array(unnest($13), '' ''), unnest($14)
     RETURNING matrix_event_id, seq';
  ELSIF variant = 'nosearch' THEN
    sql := cols || 'SELECT c, r, e, s, sm, st, mt, p, t, rt, th, md::jsonb, string_to_array(mn, '' ''), NULL
     FROM UNNEST($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) WITH ORDINALITY AS u(c, r, e, s, sm, st, mt, p, t, rt, th, md, mn, sv, n)
     ORDER BY n RETURNING matrix_event_id, seq';
  END IF;
  FOR b IN 1..batches LOOP
    e := ARRAY(SELECT '$' || base || '_' || b || '_' || i FROM generate_series(1, rows_per) i);
    EXECUTE 'WITH ins AS (' || sql || ') SELECT count(*) FROM (SELECT * FROM ins ORDER BY seq) x' USING c, r, e, s, sm, st, mt, p, t, rt, th, md, mn, sv;
  END LOOP;
END $$;
