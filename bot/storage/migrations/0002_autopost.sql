-- auto-post: guild settings, member opt-in, last posts

-- [sqlite]

CREATE TABLE guild_settings (
    guild_id         INTEGER PRIMARY KEY,
    music_channel_id INTEGER,
    autopost_notice  TEXT,
    updated_at       REAL    NOT NULL
);

CREATE TABLE member_settings (
    discord_user_id INTEGER PRIMARY KEY,
    autopost_opt_in INTEGER CHECK (autopost_opt_in IN (0, 1)),
    updated_at      REAL    NOT NULL
);

CREATE TABLE last_posts (
    discord_user_id INTEGER NOT NULL,
    channel_id      INTEGER NOT NULL,
    item_key        TEXT    NOT NULL,
    message_id      INTEGER NOT NULL,
    posted_at       REAL    NOT NULL,
    PRIMARY KEY (discord_user_id, channel_id)
) WITHOUT ROWID;

CREATE INDEX last_posts_channel_id ON last_posts (channel_id);

-- [postgresql]

CREATE TABLE guild_settings (
    guild_id         BIGINT           PRIMARY KEY,
    music_channel_id BIGINT,
    autopost_notice  TEXT,
    updated_at       DOUBLE PRECISION NOT NULL
);

CREATE TABLE member_settings (
    discord_user_id BIGINT           PRIMARY KEY,
    autopost_opt_in INTEGER CHECK (autopost_opt_in IN (0, 1)),
    updated_at      DOUBLE PRECISION NOT NULL
);

CREATE TABLE last_posts (
    discord_user_id BIGINT           NOT NULL,
    channel_id      BIGINT           NOT NULL,
    item_key        TEXT             NOT NULL,
    message_id      BIGINT           NOT NULL,
    posted_at       DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (discord_user_id, channel_id)
);

CREATE INDEX last_posts_channel_id ON last_posts (channel_id);
