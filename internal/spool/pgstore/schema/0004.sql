-- cspool spool schema, version 4: each log's usage (spool.Quotas).
--
-- cspool_logs.bytes is the bytes of the log's entries that compaction has
-- not deleted plus those of its checkpoint. Appends add to it under the
-- log's row lock (cspool_append_within); a compaction subtracts what it
-- deleted and the old checkpoint and adds the new one (pgstore/compact.go).
ALTER TABLE cspool_logs ADD COLUMN bytes bigint NOT NULL DEFAULT 0 CHECK (bytes >= 0);
UPDATE cspool_logs l SET bytes =
    coalesce((SELECT sum(e.size) FROM cspool_entries e WHERE e.log_id = l.id), 0) +
    coalesce((SELECT length(c.data) FROM cspool_checkpoints c WHERE c.log_id = l.id), 0);

-- cspool_append_within is cspool_append_at done only if the log's usage
-- after the batch is at most p_limit (NULL: always). The upsert adds the
-- batch's bytes under the log's row lock; on a usage beyond the limit it
-- raises SQLSTATE CSP03 with the usage before the batch as its message,
-- and the caller's savepoint undoes the upsert, a log just created
-- included. cspool_append_at now calls it with no limit.
CREATE FUNCTION cspool_append_within(p_name bytea, p_head bigint, p_limit bigint, p_batch bytea[], p_leaves bytea[], p_notify text)
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
    INSERT INTO cspool_logs AS l (name, head, bytes) VALUES (p_name, n, v_size)
    ON CONFLICT (name) DO UPDATE SET head = l.head + EXCLUDED.head, bytes = l.bytes + EXCLUDED.bytes
    RETURNING l.id, l.head, l.chain, l.bytes INTO v_id, v_head, h, v_bytes;
    IF p_head IS NOT NULL AND v_head - n <> p_head THEN
        RAISE EXCEPTION USING ERRCODE = 'CSP02', MESSAGE = (v_head - n)::text;
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
    INSERT INTO cspool_entries (log_id, pos, size, data)
    SELECT v_id, v_head - n + d.ord, length(d.data), d.data
    FROM unnest(p_batch) WITH ORDINALITY AS d (data, ord);
    INSERT INTO cspool_chain (log_id, pos, hash)
    SELECT v_id, v_head - n + c.ord, c.hash
    FROM unnest(hs) WITH ORDINALITY AS c (hash, ord);
    UPDATE cspool_logs SET chain = h WHERE id = v_id;
    PERFORM pg_notify('cspool_append', p_notify);
    RETURN v_head - n + 1;
END $$;

CREATE OR REPLACE FUNCTION cspool_append_at(p_name bytea, p_head bigint, p_batch bytea[], p_leaves bytea[], p_notify text)
RETURNS bigint
LANGUAGE sql
SET search_path FROM CURRENT
AS $$ SELECT cspool_append_within(p_name, p_head, NULL, p_batch, p_leaves, p_notify) $$;
