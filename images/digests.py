"""Digest arithmetic shared by the store, the unpacker and the registry
client: hashing, chain IDs, and the error for content that is not what its
digest or size promised."""

from __future__ import annotations

import hashlib

from runtime.errors import CrispyError, ErrorKind


class ContentMismatch(CrispyError):
    """Bytes that do not match their descriptor (digest or size): a corrupt
    or lying registry/archive. Never stored, never used."""

    kind = ErrorKind.DATA_LOSS


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def hex_of(digest: str) -> str:
    algo, _, enc = digest.partition(":")
    if algo != "sha256" or len(enc) != 64:
        raise ContentMismatch(f"unsupported digest {digest!r}: crispy stores sha256 content only")
    return enc


def chain_ids(diff_ids: list[str]) -> list[str]:
    """ChainID(L0) = DiffID(L0); ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln))."""
    out: list[str] = []
    for diff_id in diff_ids:
        out.append(diff_id if not out else sha256_of(f"{out[-1]} {diff_id}".encode()))
    return out


def verify(data: bytes, digest: str, size: int | None, what: str) -> None:
    if size is not None and size >= 0 and len(data) != size:
        raise ContentMismatch(f"{what} {digest} is {len(data)} bytes but its descriptor says {size}")
    actual = sha256_of(data)
    if actual != digest:
        raise ContentMismatch(f"{what} {digest} has digest {actual}: the content is corrupt or was tampered with")
