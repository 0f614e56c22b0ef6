-- cspool spool schema, version 1.
CREATE TABLE cspool_logs (
    id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name bytea  NOT NULL UNIQUE CHECK (length(name) > 0),   -- opaque user name
    head bigint NOT NULL DEFAULT 0 CHECK (head >= 0)        -- last position ever assigned
);

CREATE FUNCTION cspool_head_never_decreases() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.head < OLD.head THEN
        RAISE EXCEPTION 'spool: a user''s head must never decrease';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER cspool_logs_head_never_decreases
BEFORE UPDATE OF head ON cspool_logs
FOR EACH ROW EXECUTE FUNCTION cspool_head_never_decreases();

CREATE TABLE cspool_entries (
    log_id bigint  NOT NULL REFERENCES cspool_logs (id),
    pos    bigint  NOT NULL CHECK (pos >= 1),
    size   integer NOT NULL CHECK (size >= 0),   -- = length(data)
    data   bytea   NOT NULL,
    PRIMARY KEY (log_id, pos)
);
-- Entries are encrypted: compression cannot win, so keep large values
-- out of line but uncompressed.
ALTER TABLE cspool_entries ALTER COLUMN data SET STORAGE EXTERNAL;

CREATE TABLE cspool_checkpoints (
    log_id bigint NOT NULL PRIMARY KEY REFERENCES cspool_logs (id),
    pos    bigint NOT NULL CHECK (pos >= 1),
    data   bytea  NOT NULL
);
ALTER TABLE cspool_checkpoints ALTER COLUMN data SET STORAGE EXTERNAL;
