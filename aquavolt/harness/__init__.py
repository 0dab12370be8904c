"""aquavolt harness: runs the components as processes (demo, replays)."""
