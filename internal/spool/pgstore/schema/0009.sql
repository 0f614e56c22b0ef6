-- cspool spool schema, version 9: since when every device that read a log
-- said it reads entry format 3 (spool.ReaderFormats).
--
-- reads3_since is that time in Unix seconds, NULL when not so. A server
-- sets it at a read that says reads=3 when it is NULL, and clears it at a
-- read that does not (at most once an hour for each user and server); a
-- server started with --entry-format auto seals a user's deliveries in
-- format 3 once it is old enough. Adding a column without a default
-- rewrites nothing.
ALTER TABLE cspool_logs ADD COLUMN reads3_since bigint;
