-- cspool spool schema, version 6: the spool key the deliveries are signed
-- with (spool.KeyKeeper), recorded by the first server or cspool deliver
-- to write. Every device trusts one spool key for deliveries: a server
-- started with another would sign mail they all reject.
CREATE TABLE cspool_spool_key (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    key       bytea   NOT NULL CHECK (length(key) = 64)
);
