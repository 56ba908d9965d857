-- Replicas keep each client's status (and whether a lockdown covers it) in memory. Any change
-- to clients or lockdowns, by credgate or by hand in SQL, bumps the `clients` signal, and every
-- replica drops what it holds within a quarter second. Triggers, so that no writer can forget.
INSERT INTO replica_signals (topic, version) VALUES ('clients', 0);

CREATE FUNCTION credgate_clients_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE replica_signals SET version = version + 1 WHERE topic = 'clients';
    RETURN NULL;
END;
$$;
CREATE TRIGGER clients_changed AFTER UPDATE OR DELETE ON clients
    FOR EACH STATEMENT EXECUTE FUNCTION credgate_clients_changed();
CREATE TRIGGER lockdowns_changed AFTER INSERT OR UPDATE OR DELETE ON lockdowns
    FOR EACH STATEMENT EXECUTE FUNCTION credgate_clients_changed();
