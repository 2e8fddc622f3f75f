"""Prewarming: fill the NIC cache with what the VMs are about to need, on schedules from
prewarm.yml. This is the scheduler (`faas-accel prewarm run`), a process of its own that
talks to the cache's admin API; what the cache keeps for it is nic_cache/prewarm/.

Pure: `spec` (prewarm.yml), `cron` (crontab fields), `stack` (stack files), `plan` (run
results, plan totals). With I/O: `loader` (files and APScheduler triggers), `runner` (one
run of a schedule, through faas_accel/cacheapi.py), `scheduler` (the loop), `cli` (the
commands).
"""
