-- Plugins an administrator switched on or off. A plugin found in the plugin
-- directory without a row here is enabled: deploying it is the intent.
CREATE TABLE plugin_status (
    name     TEXT PRIMARY KEY,
    enabled  BOOLEAN NOT NULL,
    changed  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The same rule as PluginName: plugin names are directory names.
    CONSTRAINT plugin_status_name_valid CHECK (name ~ '^[a-z][a-z0-9_]{0,63}$')
);
