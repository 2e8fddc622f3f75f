"""The lab: a bare-metal server with N VMs, a SmartNIC and the internet, on one machine."""
