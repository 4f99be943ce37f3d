-- Search (live only): which fields of which item types are indexed, at
-- what weight and in which text search configuration; plugins' extra text
-- per item; and the trigger that keeps `item.search_vector` equal to what
-- that configuration says for the row's current values.

-- The text search configuration (language) of an item type; a type without
-- a row is indexed as `english`.
CREATE TABLE search_type (
    type      TEXT PRIMARY KEY REFERENCES item_type(type) ON DELETE CASCADE,
    language  REGCONFIG NOT NULL DEFAULT 'english'
);

CREATE TABLE search_field_config (
    id          UUID PRIMARY KEY,
    bundle      TEXT NOT NULL REFERENCES item_type(type) ON DELETE CASCADE,
    field_name  TEXT NOT NULL,
    weight      CHAR(1) NOT NULL DEFAULT 'C',
    -- `admin`, or the plugin whose `tap_item_update_index` declared it.
    source      TEXT NOT NULL DEFAULT 'admin',
    CONSTRAINT search_field_weight_valid CHECK (weight IN ('A', 'B', 'C', 'D')),
    CONSTRAINT search_field_name_valid CHECK (field_name ~ '^field_[a-z0-9_]{1,58}$'),
    CONSTRAINT search_field_unique UNIQUE (bundle, field_name)
);

-- Weighted text plugins contribute for the item through
-- `tap_item_update_index`: `[{"weight": "B", "text": "..."}]`. It lives on
-- the row so the trigger reads it like any other value.
ALTER TABLE item ADD COLUMN search_extra JSONB NOT NULL DEFAULT '[]'
    CONSTRAINT item_search_extra_array CHECK (jsonb_typeof(search_extra) = 'array');

-- The text of one field value: `value` as text, a reference by the name of
-- the category term or the title of the live, published item it points at;
-- a multi-value field by all of its values. Users and files are not
-- indexed.
CREATE FUNCTION search_value_text(v JSONB) RETURNS TEXT
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT string_agg(t, ' ' ORDER BY n)
    FROM (
        SELECT n, CASE
            WHEN jsonb_typeof(e) <> 'object' THEN NULL
            WHEN e ? 'value' THEN e ->> 'value'
            WHEN e ->> 'target_id' ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
            THEN COALESCE(
                (SELECT name FROM category_tag WHERE id = (e ->> 'target_id')::uuid),
                (SELECT title FROM item
                 WHERE id = (e ->> 'target_id')::uuid AND stage_id = 'live' AND status = 1))
        END AS t
        FROM jsonb_array_elements(
            CASE jsonb_typeof(v) WHEN 'array' THEN v ELSE jsonb_build_array(v) END
        ) WITH ORDINALITY AS x(e, n)
    ) parts
$$;

-- The weighted parts of an item's text, in a fixed order: the title at A
-- (part 0), each configured field at its weight by field name (part 1),
-- then plugins' extra text in the order given (part 2).
CREATE FUNCTION search_parts(item_type TEXT, title TEXT, fields JSONB, extra JSONB)
RETURNS TABLE (part INT, ord TEXT, weight "char", body TEXT)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT 0, '', 'A'::"char", title
    UNION ALL
    SELECT 1, c.field_name, c.weight::"char", search_value_text(fields -> c.field_name)
    FROM search_field_config c
    WHERE c.bundle = item_type AND fields ? c.field_name
    UNION ALL
    SELECT 2, lpad(n::text, 10, '0'), (x ->> 'weight')::"char", x ->> 'text'
    FROM jsonb_array_elements(extra) WITH ORDINALITY AS e(x, n)
    WHERE jsonb_typeof(x) = 'object' AND x ->> 'weight' IN ('A', 'B', 'C', 'D')
      AND jsonb_typeof(x -> 'text') = 'string'
$$;

CREATE FUNCTION search_language(item_type TEXT) RETURNS REGCONFIG
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT COALESCE(
        (SELECT language FROM search_type WHERE type = item_type),
        'english'::regconfig)
$$;

CREATE AGGREGATE search_tsvector_agg(tsvector) (
    SFUNC = tsvector_concat,
    STYPE = tsvector,
    INITCOND = ''
);

-- The vector of an item: every part at its weight, in the type's language.
CREATE FUNCTION item_search_vector(item_type TEXT, title TEXT, fields JSONB, extra JSONB)
RETURNS TSVECTOR
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT COALESCE(
        search_tsvector_agg(
            setweight(to_tsvector(search_language(item_type), COALESCE(p.body, '')), p.weight)
            ORDER BY p.part, p.ord),
        ''::tsvector)
    FROM search_parts(item_type, title, fields, extra) p
$$;

-- The text snippets are cut from: every part but the title.
CREATE FUNCTION item_search_body(item_type TEXT, fields JSONB, extra JSONB) RETURNS TEXT
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT COALESCE(string_agg(p.body, ' … ' ORDER BY p.part, p.ord), '')
    FROM search_parts(item_type, '', fields, extra) p
    WHERE p.part > 0 AND p.body IS NOT NULL
$$;

-- A write holds its type's search lock shared until it commits; a
-- configuration change takes it exclusively (`search::config`), so a row
-- indexed under the old configuration is committed before the reindex
-- lists its targets, and any later one sees the new configuration.
CREATE FUNCTION item_search_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(23972, hashtext(NEW.type));
    NEW.search_vector := item_search_vector(NEW.type, NEW.title, NEW.fields, NEW.search_extra);
    RETURN NEW;
END;
$$;

CREATE TRIGGER trg_item_search
    BEFORE INSERT OR UPDATE OF type, title, fields, search_extra ON item
    FOR EACH ROW EXECUTE FUNCTION item_search_update();

-- A query in web-search syntax, in the language of `item_type`, or in each
-- language item types use (OR-ed) when no type is given; NULL (matching
-- nothing) when there are no types.
CREATE AGGREGATE search_tsquery_or_agg(tsquery) (
    SFUNC = tsquery_or,
    STYPE = tsquery
);

CREATE FUNCTION search_query(q TEXT, item_type TEXT) RETURNS TSQUERY
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT search_tsquery_or_agg(websearch_to_tsquery(l, q))
    FROM (
        SELECT search_language(item_type) AS l WHERE item_type IS NOT NULL
        UNION
        SELECT search_language(t.type) FROM item_type t WHERE item_type IS NULL
    ) langs
$$;

-- Only live, published items are searched.
CREATE INDEX item_search_idx ON item USING GIN (search_vector)
    WHERE stage_id = 'live' AND status = 1;

UPDATE item SET search_vector = item_search_vector(type, title, fields, search_extra);

-- `administer search` is granted to no role by default: administrators
-- hold every permission.
