"""The images the bench pushes to its loopback registry: a pause image that
containerd needs as its sandbox image (compiled here from C, never committed
as a binary), a small busybox image for containers, and a ~50 MB five-layer
image of random bytes for the pull scenarios."""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests import imagebuild as ib
from tests.registry import LocalRegistry

PAUSE_C = r"""
/* Sleeps until told to stop; reaps orphans, as a pod's first process must. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }

int main(void) {
    struct sigaction sa = {0};
    sa.sa_handler = stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = reap;
    sa.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);
    for (;;) pause();
}
"""

BIG_LAYERS = 5
BIG_LAYER_BYTES = 10 * 1024 * 1024


@dataclass
class BenchImages:
    pause: str        # full references, "127.0.0.1:PORT/bench/pause:1"
    busybox: str
    big: str
    big_bytes: int    # compressed bytes a cold pull transfers
    busybox_image: ib.Image | None = None  # for `crispy load` while crispy cannot pull


def compile_pause(workdir: Path) -> bytes:
    src = workdir / "pause.c"
    out = workdir / "pause"
    src.write_text(PAUSE_C)
    subprocess.run(["gcc", "-static", "-Os", "-s", "-o", str(out), str(src)], check=True,
                   capture_output=True)
    return out.read_bytes()


def pause_image(binary: bytes) -> ib.Image:
    layer = ib.make_layer({"pause": ib.File(binary, 0o755)})
    return ib.build_image([layer], config={"Entrypoint": ["/pause"]})


def big_image(layers: int = BIG_LAYERS, layer_bytes: int = BIG_LAYER_BYTES) -> ib.Image:
    """Random content does not compress, so a pull moves ~layers*layer_bytes."""
    tars = [ib.make_layer({f"data{i}": ib.Dir(), f"data{i}/blob.bin": ib.File(os.urandom(layer_bytes))})
            for i in range(layers)]
    return ib.build_image(tars, config={"Cmd": ["/bin/sh"]})


def push_all(registry: LocalRegistry, with_big: bool = True) -> BenchImages:
    """Pushes the pause and busybox images, and the big one if a pull
    scenario will use it (random bytes take a few seconds to build)."""
    with tempfile.TemporaryDirectory(prefix="crispy-bench-pause-") as tmp:
        pause = pause_image(compile_pause(Path(tmp)))
    registry.push("bench/pause", "1", pause)
    busybox = ib.busybox_image()
    registry.push("bench/busybox", "1", busybox)
    big_bytes = 0
    if with_big:
        big = big_image()
        registry.push("bench/big", "1", big)
        big_bytes = sum(len(big.blobs[d]) for d in big.blobs if d != big.config_digest)
    host = registry.host
    return BenchImages(f"{host}/bench/pause:1", f"{host}/bench/busybox:1", f"{host}/bench/big:1", big_bytes,
                       busybox)
