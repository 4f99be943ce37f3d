-- The vector of an item, as `item_search_vector` of 0008 defines it (the
-- same parts in the same order), computed without planning a query per
-- part: the SQL version was re-planned on every row a trigger indexed,
-- which cost three times the text analysis itself.
CREATE OR REPLACE FUNCTION item_search_vector(item_type TEXT, title TEXT, fields JSONB, extra JSONB)
RETURNS TSVECTOR
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
DECLARE
    lang REGCONFIG := search_language(item_type);
    vec TSVECTOR := setweight(to_tsvector(lang, COALESCE(title, '')), 'A');
    f RECORD;
    val JSONB;
    body TEXT;
    x JSONB;
BEGIN
    FOR f IN
        SELECT c.field_name, c.weight::"char" AS weight
        FROM search_field_config c
        WHERE c.bundle = item_type AND fields ? c.field_name
        ORDER BY c.field_name
    LOOP
        val := fields -> f.field_name;
        -- One plain value, the common case, without the general walk.
        IF jsonb_typeof(val) = 'object' AND val ? 'value' THEN
            body := val ->> 'value';
        ELSE
            body := search_value_text(val);
        END IF;
        vec := vec || setweight(to_tsvector(lang, COALESCE(body, '')), f.weight);
    END LOOP;
    IF jsonb_typeof(extra) = 'array' THEN
        FOR x IN SELECT e FROM jsonb_array_elements(extra) WITH ORDINALITY AS a(e, n) ORDER BY n LOOP
            IF jsonb_typeof(x) = 'object' AND x ->> 'weight' IN ('A', 'B', 'C', 'D')
               AND jsonb_typeof(x -> 'text') = 'string' THEN
                vec := vec || setweight(to_tsvector(lang, x ->> 'text'), (x ->> 'weight')::"char");
            END IF;
        END LOOP;
    END IF;
    RETURN vec;
END;
$$;

-- One page of results, its total and snippets (see `search::pg`). The
-- statement is planned for the query's own lexemes: a query is first
-- turned into its tsquery, then the page is fetched by a statement planned
-- with that value, so the planner knows from the column's statistics how
-- many rows match. A rare word is then found through the GIN index; a word
-- half the site holds is found faster by reading rows in order until
-- enough match than by building a bitmap of every match. Matching a
-- tsquery against a row costs about twenty plain operators, which
-- `cpu_operator_cost` says for this function only, so the planner weighs
-- the two plans as they really cost.
CREATE FUNCTION search_page(q TEXT, item_type TEXT, page_size BIGINT, page_offset BIGINT,
                            max_ranked BIGINT)
RETURNS TABLE (total BIGINT, ids UUID[], types TEXT[], titles TEXT[], ranks REAL[],
               snippets TEXT[])
LANGUAGE plpgsql STABLE
SET cpu_operator_cost = 0.05
AS $$
DECLARE
    tsq TSQUERY := search_query(q, item_type);
BEGIN
    -- At most `max_ranked + 1` matches are ranked (the first found):
    -- ranking and counting every match of a word half the site holds
    -- costs a heap read per match, so a broader query ranks a sample and
    -- says its total is inexact.
    RETURN QUERY EXECUTE $query$
        WITH hits AS MATERIALIZED (
            SELECT i.id, ts_rank_cd(i.search_vector, $1) AS rank
            FROM item i
            WHERE i.stage_id = 'live' AND i.status = 1
              AND i.search_vector @@ $1
              AND ($2::text IS NULL OR i.type = $2)
            LIMIT $5 + 1
        ),
        ranked AS (
            SELECT id, rank FROM hits ORDER BY rank DESC, id LIMIT $5
        ),
        page AS (
            SELECT id, rank FROM ranked ORDER BY rank DESC, id LIMIT $3 OFFSET $4
        )
        SELECT
            (SELECT count(*) FROM hits),
            COALESCE(array_agg(p.id ORDER BY p.rank DESC, p.id), '{}'),
            COALESCE(array_agg(i.type ORDER BY p.rank DESC, p.id), '{}'),
            COALESCE(array_agg(i.title ORDER BY p.rank DESC, p.id), '{}'),
            COALESCE(array_agg(p.rank ORDER BY p.rank DESC, p.id), '{}'),
            COALESCE(array_agg(
                ts_headline(search_language(i.type),
                            translate(item_search_body(i.type, i.fields, i.search_extra),
                                      chr(1) || chr(2), ''),
                            $1,
                            format('StartSel=%s, StopSel=%s, MaxWords=35, MinWords=12, MaxFragments=2, FragmentDelimiter=" … "',
                                   chr(1), chr(2)))
                ORDER BY p.rank DESC, p.id), '{}')
        FROM page p
        JOIN item i ON i.id = p.id
    $query$
    USING tsq, item_type, page_size, page_offset, max_ranked;
END;
$$;
