-- the daily budget of Spotify Web API calls: calls per minute, and Spotify's QUOTA_EXCEEDED

-- [sqlite]

-- Every Spotify request the bot sent, per minute (Unix time // 60), by service ('api' for
-- the Web API, 'accounts' for token requests) and purpose (poll, command, recently_played,
-- linking), keyed by the Spotify client id Spotify counts them for. Rows older than a day
-- are pruned.
CREATE TABLE spotify_calls (
    client_id TEXT    NOT NULL,
    minute    INTEGER NOT NULL,
    service   TEXT    NOT NULL,
    purpose   TEXT    NOT NULL,
    calls     INTEGER NOT NULL,
    PRIMARY KEY (client_id, minute, service, purpose)
) WITHOUT ROWID;

-- What is kept beside the counts: since when they were counted, the hold after Spotify's
-- QUOTA_EXCEEDED (Unix time) and the budget learned from it.
CREATE TABLE spotify_quota (
    client_id      TEXT    PRIMARY KEY,
    counting_since REAL    NOT NULL,
    hold_until     REAL    NOT NULL DEFAULT 0,
    learned_budget INTEGER,
    learned_at     REAL
) WITHOUT ROWID;

-- [postgresql]

CREATE TABLE spotify_calls (
    client_id TEXT    NOT NULL,
    minute    BIGINT  NOT NULL,
    service   TEXT    NOT NULL,
    purpose   TEXT    NOT NULL,
    calls     BIGINT  NOT NULL,
    PRIMARY KEY (client_id, minute, service, purpose)
);

CREATE TABLE spotify_quota (
    client_id      TEXT             PRIMARY KEY,
    counting_since DOUBLE PRECISION NOT NULL,
    hold_until     DOUBLE PRECISION NOT NULL DEFAULT 0,
    learned_budget INTEGER,
    learned_at     DOUBLE PRECISION
);
