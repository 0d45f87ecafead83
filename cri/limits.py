"""Sizes every part of crispy has to agree on: the largest gRPC message the
server sends or accepts, and what that leaves for one reply's content."""

from __future__ import annotations

# The server's grpc.max_send_message_length and max_receive_message_length.
# kubelet's client accepts 16 MiB as well, so a bigger reply would fail on
# its side even if ours let it out. ExecSync's output cap
# (runtime.exec_sync.OUTPUT_LIMIT) stays a megabyte under it.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

# Labels, annotations and metadata of one pod or container, as a List reply
# carries them. Kubernetes allows 256 KiB of annotations per object; twice
# that leaves room for labels and what kubelet adds, and still lets a List
# hold 31 such objects before it needs a filter.
MAX_OBJECT_METADATA_BYTES = 512 * 1024
