"""Real servers for the tests and the benchmarks (`load/`), started and stopped by PID.

    procs      start, watch and stop helper processes; free ports, waiting with a deadline
    registry   a CNCF distribution (`docker-registry`) with its request log; pushes by HTTP
    cache      the NIC cache as users run it (`faas-accel cache serve`)
    runtimes   private containerd and dockerd instances, optionally in a network namespace
    tcpproxy   a TCP proxy that can throttle or cut its connections
    oci        OCI images built in memory, written as layouts and pushed with skopeo
"""
