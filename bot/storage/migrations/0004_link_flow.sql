-- link flow: who asked, each state's outcome, links waiting for Spotify

-- [sqlite]

-- Shown on the success page: the Discord account the Spotify account is linked to.
ALTER TABLE link_states ADD COLUMN discord_name TEXT;

-- The state itself, encrypted for the member: /link re-sends it during its cooldown.
ALTER TABLE link_states ADD COLUMN sealed_state BLOB;

-- NULL while the callback works; then linked, renewed, pending, taken or failed.
ALTER TABLE link_states ADD COLUMN outcome TEXT;

-- The one-time result page: a hash of its token, the names it shows, when it was seen.
ALTER TABLE link_states ADD COLUMN result_hash BLOB;
ALTER TABLE link_states ADD COLUMN spotify_name TEXT;
ALTER TABLE link_states ADD COLUMN result_shown_at REAL;

CREATE INDEX link_states_member ON link_states (discord_user_id, created_at);
CREATE UNIQUE INDEX link_states_result ON link_states (result_hash);

-- A code exchanged while Spotify held the Web API: the grant waits here, encrypted
-- for the member, until the link can be completed.
CREATE TABLE pending_links (
    discord_user_id INTEGER PRIMARY KEY,
    state_hash      BLOB    NOT NULL,
    sealed_grant    BLOB    NOT NULL,
    discord_name    TEXT,
    created_at      REAL    NOT NULL
);

-- [postgresql]

ALTER TABLE link_states ADD COLUMN discord_name TEXT;
ALTER TABLE link_states ADD COLUMN sealed_state BYTEA;
ALTER TABLE link_states ADD COLUMN outcome TEXT;
ALTER TABLE link_states ADD COLUMN result_hash BYTEA;
ALTER TABLE link_states ADD COLUMN spotify_name TEXT;
ALTER TABLE link_states ADD COLUMN result_shown_at DOUBLE PRECISION;

CREATE INDEX link_states_member ON link_states (discord_user_id, created_at);
CREATE UNIQUE INDEX link_states_result ON link_states (result_hash);

CREATE TABLE pending_links (
    discord_user_id BIGINT           PRIMARY KEY,
    state_hash      BYTEA            NOT NULL,
    sealed_grant    BYTEA            NOT NULL,
    discord_name    TEXT,
    created_at      DOUBLE PRECISION NOT NULL
);
