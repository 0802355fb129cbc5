-- embed colours picked from album art, by image id

-- [sqlite]

CREATE TABLE image_colours (
    image_key TEXT    PRIMARY KEY,
    colour    INTEGER NOT NULL CHECK (colour BETWEEN 0 AND 16777215),
    picked_at REAL    NOT NULL
) WITHOUT ROWID;

-- [postgresql]

CREATE TABLE image_colours (
    image_key TEXT             PRIMARY KEY,
    colour    INTEGER          NOT NULL CHECK (colour BETWEEN 0 AND 16777215),
    picked_at DOUBLE PRECISION NOT NULL
);
