"""Sizes every part of crispy has to agree on: the largest gRPC message the
server sends or accepts, and what that leaves for one reply's content."""

from __future__ import annotations

# The server's grpc.max_send_message_length and max_receive_message_length.
# kubelet's client accepts 16 MiB as well, so a bigger reply would fail on
# its side even if ours let it out.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
