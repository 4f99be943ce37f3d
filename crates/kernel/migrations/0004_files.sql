-- Managed files and where item revisions use them.

CREATE TABLE file_managed (
    id        UUID PRIMARY KEY,                 -- UUIDv7
    owner_id  UUID REFERENCES users(id) ON DELETE SET NULL,
    -- The sanitised name the file is offered under; never a storage path.
    filename  VARCHAR(255) NOT NULL,
    -- `<scheme>://<generated key>`: where the bytes are stored.
    uri       VARCHAR(512) NOT NULL UNIQUE,
    -- The type sniffed from the content (never the client's word alone).
    filemime  VARCHAR(255) NOT NULL,
    filesize  BIGINT NOT NULL,
    -- 0 temporary (uploaded, not yet referenced), 1 permanent (an item
    -- revision references it), 2 released (no longer referenced or expired:
    -- its object is being deleted, and it is never served).
    status    SMALLINT NOT NULL DEFAULT 0,
    -- SHA-256 of the content, computed while it streamed in.
    sha256    BYTEA NOT NULL,
    scheme    TEXT NOT NULL,
    created   TIMESTAMPTZ NOT NULL DEFAULT now(),
    changed   TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT file_managed_status_valid CHECK (status IN (0, 1, 2)),
    CONSTRAINT file_managed_scheme_valid CHECK (scheme IN ('public', 'private')),
    CONSTRAINT file_managed_uri_scheme CHECK (uri LIKE scheme || '://%'),
    CONSTRAINT file_managed_size_positive CHECK (filesize > 0),
    CONSTRAINT file_managed_sha256_length CHECK (octet_length(sha256) = 32)
);
-- Cleanup of expired temporary files and of released ones.
CREATE INDEX file_managed_status_changed_idx ON file_managed (status, changed);
CREATE INDEX file_managed_owner_idx ON file_managed (owner_id, created DESC);

-- One row per (revision, field, file): live and stage revisions alike.
-- A revision that goes (its item deleted, its stage deleted, pruning)
-- takes its rows with it; a file whose last row goes is released by the
-- trigger below, in the same transaction.
CREATE TABLE file_usage (
    file_id      UUID NOT NULL REFERENCES file_managed(id) ON DELETE RESTRICT,
    revision_id  UUID NOT NULL REFERENCES item_revision(id) ON DELETE CASCADE,
    item_id      UUID NOT NULL,
    field        TEXT NOT NULL,
    PRIMARY KEY (file_id, revision_id, field)
);
CREATE INDEX file_usage_revision_idx ON file_usage (revision_id);
CREATE INDEX file_usage_item_idx ON file_usage (item_id);

-- Releases a file when its last use goes. The file row is locked first and
-- the remaining uses are counted in a statement of their own, so a save
-- that references the file concurrently (it holds the row FOR SHARE while
-- it adds its use) is either seen here or finds the file released.
CREATE FUNCTION file_usage_release() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM file_managed WHERE id = OLD.file_id FOR UPDATE;
    IF NOT EXISTS (SELECT 1 FROM file_usage WHERE file_id = OLD.file_id) THEN
        UPDATE file_managed SET status = 2, changed = now()
        WHERE id = OLD.file_id AND status = 1;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER file_usage_release AFTER DELETE ON file_usage
    FOR EACH ROW EXECUTE FUNCTION file_usage_release();

-- `upload files` and `administer files` are granted to no role by default:
-- administrators hold them, and a site grants them to its roles.
