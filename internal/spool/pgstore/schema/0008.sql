-- cspool spool schema, version 8: appends made once (spool.OnceAppender).
--
-- Each server process remembered the nonces of the requests it accepted in
-- its own memory, so with several processes on this database a delivery
-- over HTTP (an append that names no head) that reached two of them (a
-- load balancer retrying it on a second process, or a captured request
-- replayed to each) was appended twice, and every device raised a replay
-- alarm. Now such an append records its request in cspool_once, in the
-- append's own transaction: the API's timestamp, key id and nonce (id:
-- the timestamp first, so that new records go to the same pages), the SHA-256
-- of the signed request (digest), the position and count it got, and when
-- the record may go (expires, Unix seconds: the request's timestamp has
-- left every server's window).
--
-- cspool_append_within takes three more arguments, p_once, p_digest and
-- p_expires (all NULL: nothing recorded, as before). With p_once, after the
-- update that locks the log's row and the read of its tip, it inserts the
-- record with ON CONFLICT DO NOTHING. A second append of the same request
-- waits on the log's row, or on the first's uncommitted record, until the
-- first commits; its insert then does nothing and it raises SQLSTATE CSP05,
-- its message the position and count recorded ("17 1"), or CSP06 when the
-- record's digest is another request's; either way its savepoint is rolled
-- back and nothing of it stays. Before it records, it deletes those of the
-- four oldest records (by id, which starts with the timestamp) that have
-- expired by the database's clock, skipping any another transaction holds,
-- so the table stays near the requests of one window. There is no index
-- on expires: the primary key's order is the order they expire in, and a
-- new record goes to the pages of the last ones, not to a random page.
--
-- The seven-argument function stays, as a call with the new arguments
-- NULL, for servers of version 7 still running.
CREATE TABLE cspool_once (
    id      bytea   PRIMARY KEY CHECK (length(id) = 32),
    digest  bytea   NOT NULL CHECK (length(digest) = 32),
    pos     bigint  NOT NULL CHECK (pos >= 1),
    n       integer NOT NULL CHECK (n >= 1),
    expires bigint  NOT NULL
);

CREATE FUNCTION cspool_append_within(p_name bytea, p_head bigint, p_limit bigint, p_batch bytea[], p_leaves bytea[], p_notify text, p_key bytea,
    p_once bytea, p_digest bytea, p_expires bigint)
RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    n        bigint := cardinality(p_batch);
    v_size   bigint;
    v_id     bigint;
    v_head   bigint;
    v_bytes  bigint;
    v_key    bytea;
    v_digest bytea;
    v_pos    bigint;
    v_n      integer;
    h        bytea;
    hs       bytea[] := ARRAY[]::bytea[];
BEGIN
    IF n IS NULL OR n < 1 OR cardinality(p_leaves) IS DISTINCT FROM n THEN
        RAISE EXCEPTION 'spool: cspool_append needs one leaf hash per entry';
    END IF;
    IF p_key IS NOT NULL THEN
        -- A statement of its own, after the lock: its snapshot sees a key
        -- recorded by a transaction that held the lock before.
        PERFORM pg_advisory_xact_lock_shared(1666412594);  -- 0x63537032
        SELECT key INTO v_key FROM cspool_spool_key;
        IF v_key IS DISTINCT FROM p_key THEN
            RAISE EXCEPTION USING ERRCODE = 'CSP04', MESSAGE = coalesce(encode(v_key, 'hex'), '');
        END IF;
    END IF;
    SELECT coalesce(sum(length(d)), 0) INTO v_size FROM unnest(p_batch) AS d;
    -- A plain UPDATE first: ON CONFLICT DO UPDATE would lock the row and
    -- then update it, two records in the WAL where one does.
    UPDATE cspool_logs SET bytes = bytes + v_size WHERE name = p_name RETURNING id, bytes INTO v_id, v_bytes;
    IF NOT FOUND THEN
        INSERT INTO cspool_logs AS l (name, bytes) VALUES (p_name, v_size)
        ON CONFLICT (name) DO UPDATE SET bytes = l.bytes + EXCLUDED.bytes
        RETURNING l.id, l.bytes INTO v_id, v_bytes;
    END IF;
    SELECT t.tip_head, t.tip_hash INTO v_head, h FROM cspool_tip(v_id) t;
    IF p_once IS NOT NULL THEN
        DELETE FROM cspool_once WHERE id IN (
            SELECT o.id FROM cspool_once o
            WHERE o.id IN (SELECT f.id FROM cspool_once f ORDER BY f.id LIMIT 4)
                AND o.expires < extract(epoch FROM now())::bigint
            FOR UPDATE SKIP LOCKED);
        INSERT INTO cspool_once (id, digest, pos, n, expires) VALUES (p_once, p_digest, v_head + 1, n, p_expires)
        ON CONFLICT (id) DO NOTHING;
        IF NOT FOUND THEN
            SELECT o.digest, o.pos, o.n INTO v_digest, v_pos, v_n FROM cspool_once o WHERE o.id = p_once;
            IF v_digest IS DISTINCT FROM p_digest THEN
                RAISE EXCEPTION USING ERRCODE = 'CSP06', MESSAGE = 'request id recorded for another request';
            END IF;
            RAISE EXCEPTION USING ERRCODE = 'CSP05', MESSAGE = v_pos::text || ' ' || v_n::text;
        END IF;
    END IF;
    IF p_head IS NOT NULL AND v_head <> p_head THEN
        RAISE EXCEPTION USING ERRCODE = 'CSP02', MESSAGE = v_head::text;
    END IF;
    IF p_limit IS NOT NULL AND v_bytes > p_limit THEN
        RAISE EXCEPTION USING ERRCODE = 'CSP03', MESSAGE = (v_bytes - v_size)::text;
    END IF;
    FOR i IN 1..n LOOP
        IF length(p_leaves[i]) IS DISTINCT FROM 32 THEN
            RAISE EXCEPTION 'spool: cspool_append: leaf % is not 32 bytes', i;
        END IF;
        h := sha256('cspool/v1 chain'::bytea || h || p_leaves[i]);
        hs[i] := h;
    END LOOP;
    INSERT INTO cspool_entries (log_id, pos, size, data, hash)
    SELECT v_id, v_head + d.ord, length(d.data), d.data, hs[d.ord]
    FROM unnest(p_batch) WITH ORDINALITY AS d (data, ord);
    PERFORM pg_notify('cspool_append', p_notify);
    RETURN v_head + 1;
END $$;

CREATE OR REPLACE FUNCTION cspool_append_within(p_name bytea, p_head bigint, p_limit bigint, p_batch bytea[], p_leaves bytea[], p_notify text, p_key bytea)
RETURNS bigint
LANGUAGE sql
SET search_path FROM CURRENT
AS $$ SELECT cspool_append_within(p_name, p_head, p_limit, p_batch, p_leaves, p_notify, p_key, NULL::bytea, NULL::bytea, NULL::bigint) $$;
