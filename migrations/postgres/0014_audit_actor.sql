-- The person behind a staff action (a staff identity provider's token): their id and their
-- organisation as the provider asserts them. NULL on every earlier record and on records of
-- machine clients and data subjects. Records that name a person are hashed in encoding v2,
-- which covers both columns; the v1 bytes of every other record are unchanged.
ALTER TABLE audit_log ADD COLUMN actor TEXT;
ALTER TABLE audit_log ADD COLUMN actor_org TEXT;
