-- cspool spool schema, version 12: each replacement's signed statement
-- (spool.KeyChain): sig is the Ed25519 signature, by replaced_by, of
-- keys.SuccessionMessage(replaced_by, key), written by the first server
-- started with replaced_by (which holds its secret); NULL until then, and
-- for the rows of replacements whose new key no server of this release
-- ran with. The servers chain these statements for the devices (docs/API.md,
-- "Spool keys"). A column without a default rewrites no row, and servers
-- of the release before neither read nor write it.
ALTER TABLE cspool_spool_key_replaced ADD COLUMN sig bytea CHECK (sig IS NULL OR length(sig) = 64);
