-- Content core: item types, stages, items with revisions, stage
-- associations, categories and their terms.

CREATE TABLE item_type (
    type         TEXT PRIMARY KEY,
    label        TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    has_title    BOOLEAN NOT NULL DEFAULT true,
    title_label  TEXT NOT NULL DEFAULT 'Title',
    -- The plugin that defines the type, or `kernel`.
    plugin       TEXT NOT NULL DEFAULT 'kernel',
    -- Field definitions (validated by the kernel before they are stored).
    fields       JSONB NOT NULL DEFAULT '[]',
    CONSTRAINT item_type_name_valid CHECK (type ~ '^[a-z][a-z0-9_]{0,31}$'),
    CONSTRAINT item_type_label_not_blank CHECK (length(btrim(label)) > 0)
);

CREATE TABLE stage (
    id        TEXT PRIMARY KEY,
    label     TEXT NOT NULL,
    -- Where publishing goes; NULL only for `live` itself.
    upstream  TEXT REFERENCES stage(id),
    created   TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT stage_id_valid CHECK (id ~ '^[a-z][a-z0-9_]{0,31}$'),
    CONSTRAINT stage_label_not_blank CHECK (length(btrim(label)) > 0)
);
INSERT INTO stage (id, label, upstream) VALUES ('live', 'Live', NULL);

CREATE TABLE item (
    id             UUID PRIMARY KEY,          -- UUIDv7
    type           TEXT NOT NULL,
    title          TEXT NOT NULL,
    author         UUID REFERENCES users(id) ON DELETE SET NULL,
    status         SMALLINT NOT NULL DEFAULT 1,  -- 1 = published, 0 = unpublished
    created        TIMESTAMPTZ NOT NULL DEFAULT now(),
    changed        TIMESTAMPTZ NOT NULL DEFAULT now(),
    promote        BOOLEAN NOT NULL DEFAULT false,
    sticky         BOOLEAN NOT NULL DEFAULT false,
    fields         JSONB NOT NULL DEFAULT '{}',
    -- `live`, or the stage the item was created in until that is published.
    stage_id       TEXT NOT NULL DEFAULT 'live',
    -- The revision the row currently shows.
    revision_id    UUID,
    -- Reserved for full-text search (filled by the search subsystem).
    search_vector  TSVECTOR,
    CONSTRAINT item_type_fkey FOREIGN KEY (type) REFERENCES item_type(type) ON DELETE RESTRICT,
    CONSTRAINT item_stage_fkey FOREIGN KEY (stage_id) REFERENCES stage(id) ON DELETE CASCADE,
    CONSTRAINT item_status_valid CHECK (status IN (0, 1)),
    CONSTRAINT item_fields_object CHECK (jsonb_typeof(fields) = 'object')
);
-- Listings: by type (or all) within a stage, sorted by created/changed/title.
CREATE INDEX item_type_created_idx ON item (type, stage_id, status, created DESC);
CREATE INDEX item_stage_created_idx ON item (stage_id, status, created DESC);

CREATE TABLE item_revision (
    id        UUID PRIMARY KEY,               -- UUIDv7: ordered by time
    item_id   UUID NOT NULL REFERENCES item(id) ON DELETE CASCADE,
    -- The stage the revision was written in (`live` for direct edits).
    stage_id  TEXT NOT NULL REFERENCES stage(id) ON DELETE CASCADE,
    title     TEXT NOT NULL,
    status    SMALLINT NOT NULL,
    promote   BOOLEAN NOT NULL,
    sticky    BOOLEAN NOT NULL,
    fields    JSONB NOT NULL,
    author    UUID REFERENCES users(id) ON DELETE SET NULL,
    log       TEXT NOT NULL DEFAULT '',
    created   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX item_revision_item_idx ON item_revision (item_id, id DESC);

ALTER TABLE item ADD CONSTRAINT item_revision_fkey FOREIGN KEY (revision_id)
    REFERENCES item_revision(id) DEFERRABLE INITIALLY DEFERRED;

-- A live item edited inside a stage: the stage shows `revision_id` instead
-- of the live row until the stage is published.
CREATE TABLE stage_association (
    stage_id     TEXT NOT NULL REFERENCES stage(id) ON DELETE CASCADE,
    item_id      UUID NOT NULL REFERENCES item(id) ON DELETE CASCADE,
    revision_id  UUID NOT NULL REFERENCES item_revision(id) ON DELETE CASCADE,
    changed      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (stage_id, item_id)
);

CREATE TABLE category (
    id           TEXT PRIMARY KEY,
    label        TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    CONSTRAINT category_id_valid CHECK (id ~ '^[a-z][a-z0-9_]{0,31}$'),
    CONSTRAINT category_label_not_blank CHECK (length(btrim(label)) > 0)
);

CREATE TABLE category_tag (
    id           UUID PRIMARY KEY,
    category_id  TEXT NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    parent       UUID,
    weight       INTEGER NOT NULL DEFAULT 0,
    changed      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT category_tag_category_fkey FOREIGN KEY (category_id)
        REFERENCES category(id) ON DELETE CASCADE,
    -- A parent must exist; deleting a parent is refused while it has children.
    CONSTRAINT category_tag_parent_fkey FOREIGN KEY (parent)
        REFERENCES category_tag(id) ON DELETE RESTRICT,
    CONSTRAINT category_tag_name_not_blank CHECK (length(btrim(name)) > 0),
    CONSTRAINT category_tag_not_own_parent CHECK (parent IS NULL OR parent <> id)
);
CREATE INDEX category_tag_category_idx ON category_tag (category_id, weight, name);
CREATE UNIQUE INDEX category_tag_name_key ON category_tag (category_id, parent, lower(name)) NULLS NOT DISTINCT;

-- Content permissions (`create content`, `edit own content`, `edit any
-- content`, `delete own content`, `delete any content`, `view unpublished
-- content`, `administer content types`, `administer stages`, `administer
-- categories`) are granted to no role by default: administrators hold them
-- all, and a site grants them to its roles.
