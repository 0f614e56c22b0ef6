-- cspool spool schema, version 5: fewer pages chosen by the user per append.
--
-- Until version 4 every append updated its log's cspool_logs row twice
-- (head and usage, then the chain hash), inserted a cspool_chain row besides
-- its cspool_entries row, and the foreign key's check on that insert locked
-- the log's row once more: pages chosen by the user (the row's heap page,
-- the (log_id, pos) leaves of two primary keys, and when the row's page was
-- full the leaves of cspool_logs' two indexes), each logged whole by its
-- first change after a checkpoint (full_page_writes). Now:
--
--   - an entry's chain hash is a column of its cspool_entries row, and
--     deleting entries (compaction) moves their hashes into cspool_chain
--     (trigger), which stays insert-only, so every position's hash stays
--     answerable and the head never goes back;
--   - the head and the hash at it are derived: the highest position among
--     the log's entries and deleted hashes (cspool_tip);
--   - the append updates the log's row once, for its usage (bytes), which
--     takes the row lock that serialises the log's appenders; cspool_logs
--     keeps room on its pages (fillfactor) so that the update stays on the
--     row's page (HOT) and its indexes are not touched;
--   - cspool_entries has no foreign key to cspool_logs (its check locked
--     the log's row again); logs cannot be deleted instead.
--
-- Nothing is rewritten: rows already there keep their hash in cspool_chain
-- (their hash column is NULL), and head and chain become base_head and
-- base_chain, the head and hash at the migration (no later append changes
-- them). They are renamed so that a server of an earlier version still
-- running fails on them instead of reading a head that no longer moves.
ALTER TABLE cspool_logs RENAME COLUMN head TO base_head;
ALTER TABLE cspool_logs RENAME COLUMN chain TO base_chain;
ALTER TABLE cspool_logs SET (fillfactor = 50);

CREATE OR REPLACE FUNCTION cspool_head_never_decreases() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.base_head < OLD.base_head THEN
        RAISE EXCEPTION 'spool: a user''s head must never decrease';
    END IF;
    RETURN NEW;
END $$;

-- The foreign key from cspool_entries to cspool_logs goes: its check locks
-- the log's row (FOR KEY SHARE) on every insert. Entries are inserted only
-- by cspool_append_within, with the id it has just read under the row's
-- lock, and logs are never deleted (refused below).
ALTER TABLE cspool_entries DROP CONSTRAINT IF EXISTS cspool_entries_log_id_fkey;

CREATE FUNCTION cspool_logs_kept() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'spool: a log is never deleted';
END $$;

CREATE TRIGGER cspool_logs_kept
BEFORE DELETE ON cspool_logs
FOR EACH ROW EXECUTE FUNCTION cspool_logs_kept();

CREATE TRIGGER cspool_logs_no_truncate
BEFORE TRUNCATE ON cspool_logs
FOR EACH STATEMENT EXECUTE FUNCTION cspool_logs_kept();

ALTER TABLE cspool_entries ADD COLUMN hash bytea CHECK (length(hash) = 32);  -- h(pos); NULL: in cspool_chain

-- An entry's position and hash never change, and entries leave only by
-- DELETE, which hands their hashes to cspool_chain.
CREATE TRIGGER cspool_entries_chain_immutable
BEFORE UPDATE ON cspool_entries
FOR EACH ROW WHEN (NEW.log_id IS DISTINCT FROM OLD.log_id OR NEW.pos IS DISTINCT FROM OLD.pos
    OR NEW.hash IS DISTINCT FROM OLD.hash)
EXECUTE FUNCTION cspool_chain_immutable();

CREATE TRIGGER cspool_entries_no_truncate
BEFORE TRUNCATE ON cspool_entries
FOR EACH STATEMENT EXECUTE FUNCTION cspool_chain_immutable();

CREATE FUNCTION cspool_entries_keep_chain() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    INSERT INTO cspool_chain (log_id, pos, hash)
    SELECT log_id, pos, hash FROM gone WHERE hash IS NOT NULL;
    RETURN NULL;
END $$;

CREATE TRIGGER cspool_entries_keep_chain
AFTER DELETE ON cspool_entries
REFERENCING OLD TABLE AS gone
FOR EACH STATEMENT EXECUTE FUNCTION cspool_entries_keep_chain();

-- cspool_tip returns a log's head and the chain hash at it: the highest
-- position among its entries, the hashes of the deleted ones and the base,
-- in three index probes. A plain SQL function without settings, so that
-- PostgreSQL expands it into the query calling it; its tables are found by
-- the caller's search_path, as the store's own statements find them.
CREATE FUNCTION cspool_tip(p_id bigint)
RETURNS TABLE (tip_head bigint, tip_hash bytea)
LANGUAGE sql STABLE
AS $$
    SELECT t.pos, t.hash FROM (
        (SELECT e.pos, coalesce(e.hash, (SELECT c.hash FROM cspool_chain c
                WHERE c.log_id = e.log_id AND c.pos = e.pos)) AS hash
            FROM cspool_entries e WHERE e.log_id = p_id ORDER BY e.pos DESC LIMIT 1)
        UNION ALL
        (SELECT c.pos, c.hash FROM cspool_chain c WHERE c.log_id = p_id ORDER BY c.pos DESC LIMIT 1)
        UNION ALL
        SELECT l.base_head, l.base_chain FROM cspool_logs l WHERE l.id = p_id
    ) AS t (pos, hash) ORDER BY t.pos DESC LIMIT 1
$$;

-- cspool_append_within, as in version 4 (the head and usage conditions,
-- SQLSTATE CSP02 and CSP03): the update (an upsert at the log's first
-- append) adds the batch's bytes to the log's usage and takes its row lock, which serialises the log's appenders
-- to the end of the transaction (a savepoint rolled back releases it); the
-- tip is read after it, by a statement whose snapshot sees every append
-- that held the lock before. The entries carry their hashes; the primary
-- key of cspool_entries would refuse a position taken twice.
CREATE OR REPLACE FUNCTION cspool_append_within(p_name bytea, p_head bigint, p_limit bigint, p_batch bytea[], p_leaves bytea[], p_notify text)
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
    h       bytea;
    hs      bytea[] := ARRAY[]::bytea[];
BEGIN
    IF n IS NULL OR n < 1 OR cardinality(p_leaves) IS DISTINCT FROM n THEN
        RAISE EXCEPTION 'spool: cspool_append needs one leaf hash per entry';
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
