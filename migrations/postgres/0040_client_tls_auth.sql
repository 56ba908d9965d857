-- RFC 8705 section 2.1 `tls_client_auth` (issue 16 items 4 and 7): a client registered with the
-- SHA-256 thumbprint (base64url, as in `cnf.x5t#S256`) of its certificate authenticates at the
-- token endpoint by presenting that certificate over mutual TLS, and has no secret. Its
-- `secret_hash` holds '!tls_client_auth', which is no PHC string and never verifies, so the
-- NOT NULL column stays as it is. NULL for every client registered with a secret. One
-- certificate names at most one client.
ALTER TABLE clients ADD COLUMN tls_thumbprint TEXT;
CREATE UNIQUE INDEX clients_tls_thumbprint ON clients (tls_thumbprint);
