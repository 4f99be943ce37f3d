-- Email addresses are unique regardless of case, like names: one address,
-- one account. A database that already holds users sharing an address
-- cannot take the index; the migration then fails, naming each shared
-- address and its users, and changes nothing. Give those users addresses
-- of their own (or delete the extra accounts), then migrate again.
DO $$
DECLARE
    shared TEXT;
BEGIN
    SELECT string_agg(format('%s (%s)', address, names), '; ' ORDER BY address)
      INTO shared
      FROM (SELECT lower(email) AS address,
                   string_agg(name, ', ' ORDER BY name) AS names
              FROM users
             GROUP BY lower(email)
            HAVING count(*) > 1) AS d;
    IF shared IS NOT NULL THEN
        RAISE EXCEPTION 'user email addresses must be unique, but these are shared: %', shared
            USING HINT = 'give each of these users an address of its own, then migrate again';
    END IF;
END
$$;

CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));
