"""Writing file data with holes where it is zeros.

Long runs of zeros in a layer (a preallocated file, a zero-filled
decompression bomb) need not take disk blocks: a file the unpacker has
just created reads back zeros wherever nothing was written. So data goes
to disk with pwrite() at its offset, and every all-zero stretch of the
file's STRIDE-aligned grid is skipped; the caller sets the final length
with ftruncate() so zeros at the end still count in the file's size.

Checking a stretch is one memcmp that stops at its first non-zero byte,
so ordinary data costs a few comparisons per megabyte and no extra pass;
zeros cost no write at all."""

from __future__ import annotations

import os

# A hole saves disk blocks only when it covers whole ones (4 KiB); bigger
# stretches mean fewer checks and, for mixed data, fewer split writes.
STRIDE = 64 * 1024
_ZEROS = memoryview(bytes(STRIDE))


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def write_skipping_zeros(fd: int, buf: bytes, start: int, end: int, offset: int) -> bool:
    """Writes buf[start:end] at file `offset` of `fd`, where nothing was
    written before, leaving all-zero grid stretches unwritten. True when
    its last byte was written (the file then reaches offset + length)."""
    view = memoryview(buf)
    pending = start  # first byte not yet written or skipped
    i = start
    while i < end:
        # The next grid line in file terms, so holes line up with blocks.
        step = STRIDE - (offset + (i - start)) % STRIDE
        j = min(i + step, end)
        if buf.startswith(_ZEROS[:j - i], i):
            if pending < i:
                _pwrite_all(fd, view[pending:i], offset + (pending - start))
            pending = j
        i = j
    if pending < end:
        _pwrite_all(fd, view[pending:end], offset + (pending - start))
        return True
    return False
