"""nic_cache: an OCI pull-through registry mirror that runs on a server's SmartNIC."""

__version__ = "0.1.0"
