"""Reusable helpers for integration tests: processes, OCI images, registries, runtimes."""
