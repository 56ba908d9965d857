-- What the record itself says about the ground and the origin of a request (issue 15 item 11,
-- issue 16 item 6): the declared purpose's legal basis code, the caller's own X-Request-Id and
-- the W3C trace id of its traceparent, each only when well formed. NULL on every earlier
-- record. Records carrying any of them are hashed in encoding v3, which covers all three; the
-- v1 and v2 bytes of every other record are unchanged, so old logs still verify.
ALTER TABLE audit_log ADD COLUMN legal_basis TEXT;
ALTER TABLE audit_log ADD COLUMN caller_request_id TEXT;
ALTER TABLE audit_log ADD COLUMN trace_id TEXT;
