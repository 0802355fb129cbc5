-- privacy: visibility per member, auto-post opt-in per server

-- [sqlite]

-- Its own table: /unlink forgets member_settings, but a member who chose private
-- stays private (their presence could otherwise show up again).
CREATE TABLE member_privacy (
    discord_user_id INTEGER PRIMARY KEY,
    visibility      TEXT    NOT NULL CHECK (visibility IN ('server', 'private')),
    updated_at      REAL    NOT NULL
);

-- member_settings.autopost_opt_in (the choice made before it was per server) stays
-- as the fallback for every server without a row here.
CREATE TABLE member_guild_settings (
    discord_user_id INTEGER NOT NULL,
    guild_id        INTEGER NOT NULL,
    autopost_opt_in INTEGER NOT NULL CHECK (autopost_opt_in IN (0, 1)),
    updated_at      REAL    NOT NULL,
    PRIMARY KEY (discord_user_id, guild_id)
) WITHOUT ROWID;

-- [postgresql]

CREATE TABLE member_privacy (
    discord_user_id BIGINT           PRIMARY KEY,
    visibility      TEXT             NOT NULL
                    CHECK (visibility IN ('server', 'private')),
    updated_at      DOUBLE PRECISION NOT NULL
);

CREATE TABLE member_guild_settings (
    discord_user_id BIGINT           NOT NULL,
    guild_id        BIGINT           NOT NULL,
    autopost_opt_in INTEGER          NOT NULL CHECK (autopost_opt_in IN (0, 1)),
    updated_at      DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (discord_user_id, guild_id)
);
