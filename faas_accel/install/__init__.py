"""What an operator installs on a real NIC, a faasd VM or a faas-netes cluster.

`systemd` renders the units, `plan` lays out every file of `faas-accel install nic|vm`
(pure: it reads through a callable and returns planned changes), `apply` writes a plan
under a root, `kubernetes` renders the manifests from one values file, `cli` is the click
group. Nothing here runs systemctl or kubectl: the plan says what to run next.
"""
