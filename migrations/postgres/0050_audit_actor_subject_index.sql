-- The officers' `subject` search finds records naming the subject as a touched subject
-- (audit_subjects) or as the acting subject (consents, complaints, withdrawals, page views):
-- the second half is looked up by this index, never by a scan of the log.
CREATE INDEX audit_log_actor_subject ON audit_log (actor_subject, seq);
