"""Flask blueprints: the registry API and the admin API."""
