"""Benchmarks that need the whole lab: `faas-accel bench paper`."""
