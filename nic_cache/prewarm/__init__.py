"""What the cache keeps for prewarming; the scheduler itself is faas_accel/prewarm/.

The scheduler (`faas-accel prewarm run`) is a process of its own that talks to the cache's
admin API; the cache keeps the shared state and enforces the budget: `state` (lease,
schedules, runs, requests, pins in SQLite), `budget` (the slots and bandwidth background
fills share, and how they give way to live misses), `footprint` (an image's size and whether
it is all stored, for /api/v1/popular).
"""
