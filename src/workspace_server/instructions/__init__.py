"""Platform instructions (`platform_instructions`, spec 04 §6): admin CRUD and per-workspace resolve."""
