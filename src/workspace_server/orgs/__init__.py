"""Org templates (spec 06 §3.5): `GET /org/templates` and `POST /org/import` build a whole team of
workspaces from an `org.yaml` under the org templates directory."""
