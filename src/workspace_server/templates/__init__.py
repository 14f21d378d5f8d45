"""Template listing and import (spec 02 §4)."""
