-- Replicas keep each client's status (and whether a lockdown covers it) in memory. Any change
-- to clients or lockdowns, by credgate or by hand in SQL, bumps the `clients` signal, and every
-- replica drops what it holds within a quarter second. Triggers, so that no writer can forget.
INSERT INTO replica_signals (topic, version) VALUES ('clients', 0);

CREATE TRIGGER clients_changed_update AFTER UPDATE ON clients
BEGIN UPDATE replica_signals SET version = version + 1 WHERE topic = 'clients'; END;
CREATE TRIGGER clients_changed_delete AFTER DELETE ON clients
BEGIN UPDATE replica_signals SET version = version + 1 WHERE topic = 'clients'; END;
CREATE TRIGGER lockdowns_changed_insert AFTER INSERT ON lockdowns
BEGIN UPDATE replica_signals SET version = version + 1 WHERE topic = 'clients'; END;
CREATE TRIGGER lockdowns_changed_update AFTER UPDATE ON lockdowns
BEGIN UPDATE replica_signals SET version = version + 1 WHERE topic = 'clients'; END;
CREATE TRIGGER lockdowns_changed_delete AFTER DELETE ON lockdowns
BEGIN UPDATE replica_signals SET version = version + 1 WHERE topic = 'clients'; END;
