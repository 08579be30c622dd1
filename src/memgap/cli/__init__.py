"""Command line. Only this layer prints and exits (STYLE.md, convention 8)."""
