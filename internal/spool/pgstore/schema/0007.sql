-- cspool spool schema, version 7: the spool key checked where the append
-- commits.
--
-- Version 6 recorded the spool key (cspool_spool_key), checked once, at a
-- server's start; a store with no log takes a new key. So a second server
-- started with another key on a new database recorded its key over the
-- first's, and both delivered, each signing with its own: every device
-- passed by the deliveries of the key it was not given.
--
-- Now cspool_append_within takes the key the appending server signs with
-- (p_key) and, in the append's own transaction, appends only if
-- cspool_spool_key holds it: otherwise it raises SQLSTATE CSP04, its
-- message the recorded key in hex (empty: none), and appends nothing.
-- The key is read after pg_advisory_xact_lock_shared(0x63537032, "cSp2"),
-- held to the end of the group's transaction; a server recording a key
-- takes the same lock exclusively before it looks for logs and writes the
-- key (pgstore's KeepSpoolKey). So an append either commits before the key
-- is replaced (and then the replacing server sees a log and is refused) or
-- reads the new key and is refused: the logs hold no append made under a
-- key other than the recorded one. p_key NULL checks nothing (a caller
-- that signs no delivery).
--
-- The six-argument function stays, as a call with p_key NULL, for servers
-- of earlier versions still running (they check the key at start only:
-- upgrade them all) and for cspool_append_at and cspool_append, which call
-- it.
CREATE FUNCTION cspool_append_within(p_name bytea, p_head bigint, p_limit bigint, p_batch bytea[], p_leaves bytea[], p_notify text, p_key bytea)
RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    n       bigint := cardinality(p_batch);
    v_size  bigint;
    v_id    bigint;
    v_head  bigint;
    v_bytes bigint;
    v_key   bytea;
    h       bytea;
    hs      bytea[] := ARRAY[]::bytea[];
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

CREATE OR REPLACE FUNCTION cspool_append_within(p_name bytea, p_head bigint, p_limit bigint, p_batch bytea[], p_leaves bytea[], p_notify text)
RETURNS bigint
LANGUAGE sql
SET search_path FROM CURRENT
AS $$ SELECT cspool_append_within(p_name, p_head, p_limit, p_batch, p_leaves, p_notify, NULL::bytea) $$;
