"""`faas-accel mirror-config`: make containerd, Docker or k3s pull through the NIC cache.

`plan` works out the files' new text (pure), `cli` reads, backs up and writes them.
"""
