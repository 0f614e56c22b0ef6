-- cspool spool schema, version 2: the hash chain (spool.Chainer).
--
-- cspool_logs.chain is the chain hash at the log's head; cspool_chain holds
-- the hash of every position ever assigned and is never updated or deleted
-- from (trigger), so compaction, which deletes cspool_entries rows only,
-- leaves every hash answerable.
ALTER TABLE cspool_logs ADD COLUMN chain bytea NOT NULL
    DEFAULT decode(repeat('00', 32), 'hex') CHECK (length(chain) = 32);

CREATE TABLE cspool_chain (
    log_id bigint NOT NULL REFERENCES cspool_logs (id),
    pos    bigint NOT NULL CHECK (pos >= 1),
    hash   bytea  NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (log_id, pos)
);

CREATE FUNCTION cspool_chain_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'spool: a chain hash is never changed or deleted';
END $$;

CREATE TRIGGER cspool_chain_immutable
BEFORE UPDATE OR DELETE ON cspool_chain
FOR EACH ROW EXECUTE FUNCTION cspool_chain_immutable();

CREATE TRIGGER cspool_chain_no_truncate
BEFORE TRUNCATE ON cspool_chain
FOR EACH STATEMENT EXECUTE FUNCTION cspool_chain_immutable();

-- cspool_append appends a batch to a log: one call, hence one statement and
-- one transaction. The upsert takes the log's row lock (serialising every
-- appender of that log, whatever connection it uses) and returns the head
-- and chain hash before the batch; the batch takes head+1..head+n, and
-- h(p) = sha256('cspool/v1 chain' || h(p-1) || leaf(p)), where leaves[i] is
-- sha256 of batch[i] (computed by the caller, which holds the data). The
-- notice on channel cspool_append is delivered to listeners at commit.
CREATE FUNCTION cspool_append(p_name bytea, p_batch bytea[], p_leaves bytea[], p_notify text)
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

-- Logs present at migration: chain the entries they hold. A log that lost
-- entries to compaction cannot be chained; the migration fails (SQLSTATE
-- CSP01) and the whole transaction, schema change included, rolls back.
DO $$
DECLARE
    bad record;
    r   record;
    cur bigint;
    h   bytea;
BEGIN
    SELECT l.name, l.head, count(e.pos) AS n INTO bad
    FROM cspool_logs l LEFT JOIN cspool_entries e ON e.log_id = l.id
    GROUP BY l.id
    HAVING count(e.pos) <> l.head OR coalesce(max(e.pos), 0) <> l.head
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'CSP01', MESSAGE = format(
            'log %s holds %s of its %s entries (compacted)',
            encode(bad.name, 'escape'), bad.n, bad.head);
    END IF;
    FOR r IN SELECT log_id, pos, data FROM cspool_entries ORDER BY log_id, pos LOOP
        IF cur IS DISTINCT FROM r.log_id THEN
            IF cur IS NOT NULL THEN
                UPDATE cspool_logs SET chain = h WHERE id = cur;
            END IF;
            cur := r.log_id;
            h := decode(repeat('00', 32), 'hex');
        END IF;
        h := sha256('cspool/v1 chain'::bytea || h || sha256(r.data));
        INSERT INTO cspool_chain (log_id, pos, hash) VALUES (r.log_id, r.pos, h);
    END LOOP;
    IF cur IS NOT NULL THEN
        UPDATE cspool_logs SET chain = h WHERE id = cur;
    END IF;
END $$;
