-- auto-post outbox rows name their member and server (checked again before a late send)

-- [sqlite]

-- The outbox holds posts for minutes at most, so it is made again rather than altered:
-- a row queued before this version names nobody, and nobody could be checked for it.
DROP TABLE autopost_outbox;

-- One row per auto-post to send. `nonce` goes to Discord with enforce_nonce, so
-- a post sent twice (a sender died after sending, before marking it) lands once.
-- A sender claims a row until `claimed_until`; `message_id` is set once sent,
-- `failure` when Discord refused the channel for good. `discord_user_id` and
-- `guild_id` say whose post it is and for which server: going private, unlinking
-- or opting out deletes the member's unsent rows in the same transaction, and a
-- sender checks the member again before a late send.
CREATE TABLE autopost_outbox (
    nonce           TEXT    PRIMARY KEY,
    guild_id        INTEGER NOT NULL,
    channel_id      INTEGER NOT NULL,
    discord_user_id INTEGER NOT NULL,
    payload         TEXT    NOT NULL,
    created_at      REAL    NOT NULL,
    claimed_until   REAL    NOT NULL DEFAULT 0,
    message_id      INTEGER,
    failure         TEXT
) WITHOUT ROWID;

CREATE INDEX autopost_outbox_created ON autopost_outbox (created_at);

CREATE INDEX autopost_outbox_member ON autopost_outbox (discord_user_id);

-- [postgresql]

DROP TABLE autopost_outbox;

CREATE TABLE autopost_outbox (
    nonce           TEXT             PRIMARY KEY,
    guild_id        BIGINT           NOT NULL,
    channel_id      BIGINT           NOT NULL,
    discord_user_id BIGINT           NOT NULL,
    payload         TEXT             NOT NULL,
    created_at      DOUBLE PRECISION NOT NULL,
    claimed_until   DOUBLE PRECISION NOT NULL DEFAULT 0,
    message_id      BIGINT,
    failure         TEXT
);

CREATE INDEX autopost_outbox_created ON autopost_outbox (created_at);

CREATE INDEX autopost_outbox_member ON autopost_outbox (discord_user_id);
