"""Checks every CRI request gets before it reaches runtime/: text the kernel
and the OCI runtime cannot carry, enum values the CRI does not define, and
how much free-form data one pod or container may keep.

A NUL byte cannot pass through argv, environ, a path or a hostname, so one
anywhere in a request would fail deep inside runc, conmon or a syscall (as
INTERNAL, after half the object was made). Found up front, the caller learns
which field to fix.
"""

from __future__ import annotations

from typing import Any, Sequence

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from cri.limits import MAX_MESSAGE_BYTES, MAX_OBJECT_METADATA_BYTES
from cri.proto import api_pb2 as pb
from runtime.errors import InvalidArgument, ResourceExhausted

_SHOWN_KEY = 64  # characters of a map key quoted in an error


def _key(k: Any) -> str:
    text = repr(k)
    return text if len(text) <= _SHOWN_KEY else text[:_SHOWN_KEY] + "..."


def _check_scalar(field: FieldDescriptor, value: Any, path: str) -> None:
    if field.type == FieldDescriptor.TYPE_STRING and "\0" in value:
        raise InvalidArgument(f"{path} contains a NUL byte, which no path, argument, name or label may hold; remove it")
    if field.type == FieldDescriptor.TYPE_BYTES and b"\0" in value:
        raise InvalidArgument(f"{path} contains a NUL byte, which an environment value cannot hold; remove it")
    if field.type == FieldDescriptor.TYPE_ENUM:
        enum = field.enum_type
        assert enum is not None  # protobuf gives every enum field its descriptor
        if enum.values_by_number.get(value) is None:
            known = ", ".join(f"{v.name} ({v.number})" for v in enum.values)
            raise InvalidArgument(f"{path} is {value}, which is not a {enum.name}; use one of {known}")


def check_request(message: Message, path: str = "") -> None:
    """Raises InvalidArgument naming the first field (as a path like
    `config.envs[2].key`) that holds a NUL byte or an unknown enum value."""
    for field, value in message.ListFields():
        where = f"{path}.{field.name}" if path else field.name
        if field.type == FieldDescriptor.TYPE_MESSAGE and (entry_type := field.message_type) is not None \
                and entry_type.GetOptions().map_entry:
            value_field = entry_type.fields_by_name["value"]
            key_field = entry_type.fields_by_name["key"]
            for k, v in value.items():
                entry = f"{where}[{_key(k)}]"
                _check_scalar(key_field, k, f"{where} key {_key(k)}")
                if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    check_request(v, entry)
                else:
                    _check_scalar(value_field, v, entry)
        elif field.is_repeated:
            for i, item in enumerate(value):
                if field.type == FieldDescriptor.TYPE_MESSAGE:
                    check_request(item, f"{where}[{i}]")
                else:
                    _check_scalar(field, item, f"{where}[{i}]")
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            check_request(value, where)
        else:
            _check_scalar(field, value, where)


# ---- how much one object may carry --------------------------------------------

def _check_listed_size(what: str, listed: Any) -> None:
    size = listed.ByteSize()
    if size > MAX_OBJECT_METADATA_BYTES:
        raise InvalidArgument(
            f"the labels, annotations and metadata of this {what} take {size} bytes; crispy keeps at most "
            f"{MAX_OBJECT_METADATA_BYTES} bytes ({MAX_OBJECT_METADATA_BYTES // 1024} KiB) per {what}, so that "
            f"lists stay within the gRPC message limit (Kubernetes allows 256 KiB of annotations); "
            f"move bulk data elsewhere, e.g. into a volume")


def check_pod_config(config: pb.PodSandboxConfig) -> None:
    """What ListPodSandbox would return for the pod must stay small."""
    _check_listed_size("pod sandbox", pb.PodSandbox(metadata=config.metadata, labels=config.labels,
                                                    annotations=config.annotations))


def check_container_config(config: pb.ContainerConfig) -> None:
    """What ListContainers would return for the container must stay small."""
    _check_listed_size("container", pb.Container(metadata=config.metadata, image=config.image,
                                                 labels=config.labels, annotations=config.annotations))


def check_reply_size(rpc: str, reply: Message, items: Sequence[Message], noun: str) -> None:
    """A list reply beyond the message limit would fail on the wire with a
    bare "message larger than max"; this says what to do instead."""
    size = reply.ByteSize()
    if size <= MAX_MESSAGE_BYTES:
        return
    biggest = max(items, key=lambda m: m.ByteSize())
    ident = getattr(biggest, "id", "") or getattr(getattr(biggest, "attributes", None), "id", "")
    raise ResourceExhausted(
        f"{rpc} would return {len(items)} {noun} in {size} bytes, more than the {MAX_MESSAGE_BYTES} bytes a reply "
        f"may carry; list fewer at a time with a filter (id, pod sandbox id, state or label selector). "
        f"The largest is {ident[:13]} ({biggest.ByteSize()} bytes)")
