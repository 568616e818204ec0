DROP TABLE core.platform_secrets;
