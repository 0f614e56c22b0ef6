-- cspool spool schema, version 10: since when every device that read a log
-- said it reads entry format 4 (spool.ReaderFormats), as reads3_since is
-- for format 3 (version 9).
--
-- A server tells a user's devices to write commands of version 2 (entry
-- format 4) once reads4_since is old enough. A log made from this version
-- on has every read recorded from its start: its row is made with both
-- times at 0 (the column defaults), so both hold from the first read; the
-- logs present keep NULL until a read says it. Adding a column and setting
-- a default rewrite nothing.
ALTER TABLE cspool_logs ADD COLUMN reads4_since bigint;
ALTER TABLE cspool_logs ALTER COLUMN reads3_since SET DEFAULT 0;
ALTER TABLE cspool_logs ALTER COLUMN reads4_since SET DEFAULT 0;
