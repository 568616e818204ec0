DROP TABLE core.key_erasures;
