"""Prewarming: fill the cache with what the VMs are about to need, on schedules from prewarm.yml.

The scheduler (`faas-accel prewarm run`) is a process of its own that talks to the cache's
admin API; the cache keeps the shared state and enforces the budget.

Scheduler side, pure: `spec` (prewarm.yml), `cron` (crontab fields), `stack` (stack files),
`plan` (run results, plan totals). With I/O: `loader` (files and APScheduler triggers),
`client` (the admin API), `runner` (one run of a schedule), `scheduler` (the loop).
Cache side: `state` (lease, schedules, runs, requests, pins in SQLite), `budget` (the slots
and bandwidth background fills share, and how they give way to live misses), `footprint`
(an image's size and whether it is all stored, for /api/v1/popular).
"""
