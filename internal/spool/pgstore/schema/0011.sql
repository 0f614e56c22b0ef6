-- cspool spool schema, version 11: the spool keys replaced
-- (spool.KeyHistory): each key a replacement took out of cspool_spool_key
-- and the key recorded over it, in the order of the replacements, written
-- in ReplaceSpoolKey's transaction. Servers of the release before may go
-- on running on the database during an upgrade: they never replace a key
-- while these run (a replacement needs every holder of the old key
-- stopped), and a new table changes nothing they read or write.
CREATE TABLE cspool_spool_key_replaced (
	seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	key         bytea NOT NULL CHECK (length(key) = 64),
	replaced_by bytea NOT NULL CHECK (length(replaced_by) = 64)
);
