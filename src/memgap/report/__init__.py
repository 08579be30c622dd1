"""Comparisons and reports built from the store: aggregate first (pure), then render."""
