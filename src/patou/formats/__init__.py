"""File formats other tools write and read: one module per format (readers, writers, checks)."""
