-- Hashes of the refresh tokens a session rotated away (newest first, space-separated, at
-- most ROTATED_KEEP of them). Presenting one of these is a replay of a stolen token and
-- revokes the session; any other wrong hash is merely invalid, so knowing a session id is
-- not enough to revoke someone's session.
ALTER TABLE sessions ADD COLUMN rotated_refresh_hashes TEXT NOT NULL DEFAULT '';
