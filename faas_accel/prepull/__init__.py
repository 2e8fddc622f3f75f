"""`faas-accel prepull`: keep a VM's container runtime holding what its NIC cache holds.

`prepuller` (one round, the runtimes, the loop; its docstring says why images are pulled by
digest), `fanout` (pull what other VMs just deployed), `cli` (the commands).
"""
