"""`crispy explain`: what a pod or container is on this node as the kernel
sees it, read at the moment of asking from /proc, mountinfo, cgroup files
and the image store, next to what crispy asked the OCI runtime for (the
bundle's config.json) so that the two can be told apart.

One module per section (processes, namespaces, cgroup, filesystem,
security, network), each reading from a /proc and cgroup root it is given
so that unit tests run on fixture trees; `report.py` assembles them for a
record and `render.py` turns a report into text. `paths.py` answers where a
path in a container comes from (`crispy explain --path`).
"""
