"""Reverse proxies to the control plane (`/cp/*`) and the canvas (unmatched paths), spec 06 §1.4."""
