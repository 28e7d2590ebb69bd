"""Public API schemas, by resource and by direction of data (Create, Update, Public)."""
