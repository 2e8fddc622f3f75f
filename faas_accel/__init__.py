"""faas-accel: the OpenFaaS side of the NIC image cache (hook, mirror config, CLI, lab)."""

__version__ = "0.1.0"
