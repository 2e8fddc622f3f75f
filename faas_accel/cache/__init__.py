"""`faas-accel cache`: serve the NIC cache (nic_cache/) under gunicorn, scrub its store, and
ask its admin API for prefetches and listings."""
