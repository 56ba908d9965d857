-- Sign-in to the pages (console, portal). Both tables are keyed by the SHA-256 of a random
-- cookie value, never the value itself: a copy of the database opens no session.
--
-- A sign-in under way: what the callback needs (state, nonce, PKCE verifier, the redirect URI
-- it sent) to finish it on whichever replica the browser comes back to. Single use, deleted
-- when the callback reads it, pruned after ten minutes.
CREATE TABLE page_signins (
    id_hash      TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,      -- 'staff' | 'subject'
    issuer       TEXT NOT NULL,
    audience     TEXT NOT NULL,
    state        TEXT NOT NULL,
    nonce        TEXT NOT NULL,
    verifier     TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    next_path    TEXT NOT NULL,
    created_at   BIGINT NOT NULL     -- unix microseconds, UTC
);
CREATE INDEX page_signins_created ON page_signins (created_at);

-- A signed-in person: who the provider said they are at sign-in, when they were last seen
-- (idle timeout) and when the session ends whatever they do (absolute lifetime).
CREATE TABLE page_sessions (
    id_hash      TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,      -- 'staff' | 'subject'
    issuer       TEXT NOT NULL,
    who          TEXT NOT NULL,      -- the person's id, or the subject id
    subject_type TEXT,               -- subjects: 'legal' | 'natural'
    name         TEXT,               -- staff: display name
    org          TEXT,               -- staff: organisation
    roles        TEXT,               -- staff: credgate roles, space-separated
    created_at   BIGINT NOT NULL,
    seen_at      BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX page_sessions_expires ON page_sessions (expires_at);
