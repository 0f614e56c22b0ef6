-- cspool spool schema, version 3: the conditional append
-- (spool.HeadAppender).
--
-- cspool_append_at is cspool_append done only if the log's head before the
-- batch is p_head (NULL: always). The upsert takes the log's row lock first,
-- so the head it returns cannot move before the commit; on another head it
-- raises SQLSTATE CSP02 with that head as its message, and the caller's
-- savepoint undoes the upsert. cspool_append now calls it with NULL.
CREATE FUNCTION cspool_append_at(p_name bytea, p_head bigint, p_batch bytea[], p_leaves bytea[], p_notify text)
RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    n      bigint := cardinality(p_batch);
    v_id   bigint;
    v_head bigint;
    h      bytea;
    hs     bytea[] := ARRAY[]::bytea[];
BEGIN
    IF n IS NULL OR n < 1 OR cardinality(p_leaves) IS DISTINCT FROM n THEN
        RAISE EXCEPTION 'spool: cspool_append needs one leaf hash per entry';
    END IF;
    INSERT INTO cspool_logs AS l (name, head) VALUES (p_name, n)
    ON CONFLICT (name) DO UPDATE SET head = l.head + EXCLUDED.head
    RETURNING l.id, l.head, l.chain INTO v_id, v_head, h;
    IF p_head IS NOT NULL AND v_head - n <> p_head THEN
        RAISE EXCEPTION USING ERRCODE = 'CSP02', MESSAGE = (v_head - n)::text;
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

CREATE OR REPLACE FUNCTION cspool_append(p_name bytea, p_batch bytea[], p_leaves bytea[], p_notify text)
RETURNS bigint
LANGUAGE sql
SET search_path FROM CURRENT
AS $$ SELECT cspool_append_at(p_name, NULL, p_batch, p_leaves, p_notify) $$;
