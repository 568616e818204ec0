COMMENT ON SCHEMA encryption IS 'Custos encryption service: tenants, key contexts and wrapped key versions';
