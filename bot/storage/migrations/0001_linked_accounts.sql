-- linked accounts and OAuth link states

-- [sqlite]

CREATE TABLE linked_accounts (
    discord_user_id    INTEGER PRIMARY KEY,
    spotify_account_id TEXT    NOT NULL UNIQUE,
    spotify_user_id    TEXT    NOT NULL,
    display_name       TEXT    NOT NULL,
    refresh_token      BLOB,
    scopes             TEXT    NOT NULL DEFAULT '',
    linked_at          REAL    NOT NULL,
    status             TEXT    NOT NULL DEFAULT 'active'
                       CHECK (status IN ('active', 'broken'))
);

CREATE TABLE link_states (
    state_hash      BLOB    PRIMARY KEY,
    discord_user_id INTEGER NOT NULL,
    created_at      REAL    NOT NULL,
    expires_at      REAL    NOT NULL,
    used_at         REAL
) WITHOUT ROWID;

-- purge_link_states deletes by when a state finished: used, or else expired.
CREATE INDEX link_states_finished_at ON link_states (coalesce(used_at, expires_at));

-- [postgresql]

CREATE TABLE linked_accounts (
    discord_user_id    BIGINT           PRIMARY KEY,
    spotify_account_id TEXT             NOT NULL UNIQUE,
    spotify_user_id    TEXT             NOT NULL,
    display_name       TEXT             NOT NULL,
    refresh_token      BYTEA,
    scopes             TEXT             NOT NULL DEFAULT '',
    linked_at          DOUBLE PRECISION NOT NULL,
    status             TEXT             NOT NULL DEFAULT 'active'
                       CHECK (status IN ('active', 'broken'))
);

CREATE TABLE link_states (
    state_hash      BYTEA            PRIMARY KEY,
    discord_user_id BIGINT           NOT NULL,
    created_at      DOUBLE PRECISION NOT NULL,
    expires_at      DOUBLE PRECISION NOT NULL,
    used_at         DOUBLE PRECISION
);

CREATE INDEX link_states_finished_at ON link_states ((coalesce(used_at, expires_at)));
