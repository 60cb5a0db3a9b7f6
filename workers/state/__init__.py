"""Per-conversation state shared by all workers: the Redis store and its in-memory twin."""
