DROP TABLE core.disabled_key_versions;
