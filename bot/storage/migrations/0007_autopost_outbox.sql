-- auto-post outbox: posts any process may send, once (Discord's nonce)

-- [sqlite]

-- One row per auto-post to send. `nonce` goes to Discord with enforce_nonce, so
-- a post sent twice (a sender died after sending, before marking it) lands once.
-- A sender claims a row until `claimed_until`; `message_id` is set once sent,
-- `failure` when Discord refused the channel for good.
CREATE TABLE autopost_outbox (
    nonce         TEXT    PRIMARY KEY,
    channel_id    INTEGER NOT NULL,
    payload       TEXT    NOT NULL,
    created_at    REAL    NOT NULL,
    claimed_until REAL    NOT NULL DEFAULT 0,
    message_id    INTEGER,
    failure       TEXT
) WITHOUT ROWID;

CREATE INDEX autopost_outbox_created ON autopost_outbox (created_at);

-- [postgresql]

CREATE TABLE autopost_outbox (
    nonce         TEXT             PRIMARY KEY,
    channel_id    BIGINT           NOT NULL,
    payload       TEXT             NOT NULL,
    created_at    DOUBLE PRECISION NOT NULL,
    claimed_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    message_id    BIGINT,
    failure       TEXT
);

CREATE INDEX autopost_outbox_created ON autopost_outbox (created_at);
