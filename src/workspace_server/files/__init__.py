"""Container files API: list, read, write, delete a workspace's files (spec 02 §7)."""
