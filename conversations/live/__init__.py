"""A running answer's stream: its typed events, the in-memory draft they build, and fan-out."""
