DROP TABLE core.items;
DROP TABLE core.key_contexts;
