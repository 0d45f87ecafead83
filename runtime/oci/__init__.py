"""OCI runtimes: the interface the lifecycle uses (interface.py), the
runc-compatible command line (cli.py) with its runc and crun
implementations, what a binary is (probe.py) and the per-binary factory
(factory.py)."""
