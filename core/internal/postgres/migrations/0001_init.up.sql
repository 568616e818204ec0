COMMENT ON SCHEMA core IS 'Custos core: users, tenants, credentials and encrypted vault items';
