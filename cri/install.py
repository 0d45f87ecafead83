"""`crispy install` and `crispy uninstall`: put crispy on a node the way a
package would, without a package manager.

install: a venv under --prefix with crispy pip-installed into it, the
systemd unit (shipped in cri/systemd/) pointing at it, the default config
if there is none, and the default CNI network as `crispy cni-install`
writes it. What it created is listed in <prefix>/install-manifest.json, so
uninstall removes exactly that and nothing an operator made or changed
(a config edited since is kept, and said so). Images and pod data stay
unless --purge. systemctl is never run: the operator enables the unit
(`systemctl daemon-reload && systemctl enable --now crispy`)."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import venv
from dataclasses import asdict, dataclass, field
from importlib import metadata, resources
from pathlib import Path
from urllib.parse import unquote

from cri import config as configmod
from cri import config_toml
from runtime import atomicfile
from runtime.cni import default_network
from runtime.errors import CrispyError

UNIT_NAME = "crispy.service"
# The manifest's mark for the default CNI network: crispy rewrites that file
# itself when kubelet's pod CIDR changes, so it is removed while it is still
# crispy's own (generated_subnets), not while its bytes are unchanged.
GENERATED_CNI = "crispy-default-network"
MANIFEST = "install-manifest.json"
CONFIG_HEADER = ("# crispy's configuration, written by `crispy install` (the defaults and its flags).\n"
                 "# Keys left out keep their defaults (`crispy config --default`); `crispy config --origins`\n"
                 "# shows where each comes from; drop-ins in crispy.d/*.toml beside this file are merged over\n"
                 "# it in lexical order.\n")


class InstallError(Exception):
    """Installing or uninstalling cannot go on; the message says why."""


@dataclass
class Manifest:
    prefix: str
    # path -> sha256 of what we wrote (files we remove only if unchanged)
    files: dict[str, str] = field(default_factory=dict)
    dirs: list[str] = field(default_factory=list)   # created by us, removed if empty (the prefix: whole)

    def save(self) -> None:
        atomicfile.write_bytes(Path(self.prefix) / MANIFEST, json.dumps(asdict(self), indent=2).encode() + b"\n",
                               mode=0o644)

    @classmethod
    def load(cls, prefix: Path) -> Manifest | None:
        try:
            data = json.loads((prefix / MANIFEST).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise InstallError(f"{prefix / MANIFEST} cannot be read: {e}") from None
        return cls(str(prefix), dict(data.get("files", {})), list(data.get("dirs", [])))


def unit_template() -> str:
    return resources.files("cri.systemd").joinpath(UNIT_NAME).read_text()


def render_unit(command: list[str]) -> str:
    """The shipped unit with its ExecStart filled in."""
    return unit_template().replace("@CRISPY@", shlex.join(command))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _mkdirs(path: Path, manifest: Manifest) -> None:
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(mode=0o755)
        manifest.dirs.append(str(d))


def _write(path: Path, data: bytes, manifest: Manifest, mode: int = 0o644) -> None:
    _mkdirs(path.parent, manifest)
    atomicfile.write_bytes(path, data, mode=mode)
    manifest.files[str(path)] = _sha(data)


def checkout_root() -> Path | None:
    """The source tree this crispy runs from, if it is one (pip installs
    from it); None for an installed crispy."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "cri" / "cli.py").is_file() else None


def installed_from() -> str | None:
    """What to pip install into the node's venv: the checkout this crispy
    runs from, else the local directory or file pip installed it from
    (PEP 610's direct_url.json). Never a name looked up on an index: a
    package called crispy there need not be this one."""
    root = checkout_root()
    if root is not None:
        return str(root)
    try:
        raw = metadata.distribution("crispy").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    try:
        url = json.loads(raw or "{}").get("url", "")
    except ValueError:
        return None
    if url.startswith("file://"):
        path = unquote(url[len("file://"):])
        return path if os.path.exists(path) else None
    return None


def _make_venv(prefix: Path, source: str, out: list[str]) -> Path:
    venv.EnvBuilder(with_pip=True, clear=False, symlinks=True).create(str(prefix))
    pip = [str(prefix / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    done = subprocess.run(pip + [source], capture_output=True, text=True)
    if done.returncode != 0:
        raise InstallError(f"pip install {source} into {prefix} failed:\n{done.stderr.strip()[-2000:]}")
    out.append(f"installed crispy from {source} into the venv {prefix}")
    return prefix / "bin" / "crispy"


def _wrapper(prefix: Path, manifest: Manifest, out: list[str]) -> Path:
    # --no-venv: this Python's crispy, behind a stable path the unit can name.
    target = prefix / "bin" / "crispy"
    text = f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m cri.cli \"$@\"\n"
    _write(target, text.encode(), manifest, mode=0o755)
    out.append(f"wrote {target} (runs {sys.executable}'s crispy)")
    return target


def install(cfg: configmod.Config, prefix: Path, unit_dir: Path, config_dir: Path, source: str | None,
            use_venv: bool, config_flag: bool) -> list[str]:
    """Returns what was done, one sentence per step."""
    out: list[str] = []
    if Manifest.load(prefix) is not None:
        raise InstallError(f"crispy is already installed in {prefix}; `crispy uninstall --prefix {prefix}` first")
    if prefix.exists() and any(prefix.iterdir()):
        raise InstallError(f"{prefix} exists and is not empty; choose another --prefix")
    manifest = Manifest(str(prefix))
    _mkdirs(prefix, manifest)
    manifest.save()  # first, so a failure below can still be uninstalled
    try:
        if use_venv:
            src = source or installed_from()
            if src is None:
                raise InstallError("cannot tell where this crispy was installed from; give --source (a checkout, "
                                   "sdist or wheel), or --no-venv to use this crispy as it is")
            command = [str(_make_venv(prefix, src, out))]
        else:
            command = [str(_wrapper(prefix, manifest, out))]
        config_path = config_dir / configmod.DEFAULT_CONFIG_PATH.name
        if config_flag:
            command += ["--config", str(config_path)]
        unit = unit_dir / UNIT_NAME
        if unit.exists():
            out.append(f"{unit} exists; left it alone")
        else:
            _write(unit, render_unit(command).encode(), manifest)
            out.append(f"wrote {unit} (ExecStart={shlex.join(command)})")
        if config_path.exists():
            out.append(f"{config_path} exists; left it alone")
        else:
            # The configuration install ran with: the defaults, plus any
            # flags given to `crispy install` (--data-root ...).
            _write(config_path, config_toml.dumps(cfg.to_dict(), header=CONFIG_HEADER).encode(), manifest)
            out.append(f"wrote {config_path}")
        dropins = config_dir / "crispy.d"
        if not dropins.exists():
            _mkdirs(dropins, manifest)
        if not default_network.has_network_config(cfg.cni.conf_dir):
            _mkdirs(Path(cfg.cni.conf_dir), manifest)
        try:
            written, message = default_network.install_for(cfg.cni, cfg.data_root)
        except (CrispyError, OSError) as e:
            raise InstallError(f"default CNI network: {getattr(e, 'message', None) or e}") from None
        if written is not None:
            # install_for made the directory itself if it had to.
            manifest.files[str(written)] = GENERATED_CNI
        out.append(message)
    finally:
        manifest.save()
    out.append("next: `crispy check`, then `systemctl daemon-reload && systemctl enable --now crispy`")
    return out


def uninstall(cfg: configmod.Config, prefix: Path, purge: bool) -> list[str]:
    manifest = Manifest.load(prefix)
    if manifest is None:
        raise InstallError(f"no crispy installed in {prefix} ({prefix / MANIFEST} is missing)")
    out: list[str] = []
    for name, sha in manifest.files.items():
        path = Path(name)
        if path.is_relative_to(prefix):
            continue  # goes with the prefix
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        ours = _is_generated_network(data) if sha == GENERATED_CNI else _sha(data) == sha
        if not ours and not purge:
            out.append(f"kept {path}: changed since install (remove it by hand, or --purge)")
            continue
        path.unlink()
        out.append(f"removed {path}")
    if str(prefix) in manifest.dirs:
        shutil.rmtree(prefix)
        out.append(f"removed {prefix}/")
    else:
        # The prefix existed before (empty): leave it, empty again.
        for child in prefix.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        out.append(f"emptied {prefix}/")
    for name in sorted(manifest.dirs, key=len, reverse=True):
        d = Path(name)
        if d == prefix or d.is_relative_to(prefix):
            continue
        try:
            d.rmdir()
            out.append(f"removed {d}/")
        except OSError:
            pass  # not empty: someone else's files live there now
    if purge:
        for root in (cfg.data_root, cfg.state_root):
            if _mounts_under(root):
                out.append(f"kept {root}: mounts are still active under it (stop every pod first)")
                continue
            if os.path.isdir(root):
                shutil.rmtree(root)
                out.append(f"removed {root}/ (--purge)")
    else:
        out.append(f"kept {cfg.data_root} and {cfg.state_root} (images, pods); --purge removes them")
    return out


def _is_generated_network(data: bytes) -> bool:
    try:
        return default_network.generated_subnets(json.loads(data)) is not None
    except ValueError:
        return False


def _mounts_under(root: str) -> bool:
    prefix = root.rstrip("/") + "/"
    try:
        with open("/proc/self/mounts") as f:
            return any(line.split()[1].startswith(prefix) for line in f)
    except OSError:
        return False


def run_install(cfg: configmod.Config, args: argparse.Namespace) -> int:
    config_dir = Path(args.config_dir)
    try:
        done = install(cfg, Path(args.prefix).absolute(), Path(args.unit_dir), config_dir, args.source,
                       use_venv=not args.no_venv,
                       config_flag=config_dir != configmod.DEFAULT_CONFIG_PATH.parent)
    except InstallError as e:
        print(f"crispy install: {e}", file=sys.stderr)
        return 1
    print("\n".join(done))
    return 0


def run_uninstall(cfg: configmod.Config, args: argparse.Namespace) -> int:
    try:
        done = uninstall(cfg, Path(args.prefix).absolute(), args.purge)
    except InstallError as e:
        print(f"crispy uninstall: {e}", file=sys.stderr)
        return 1
    print("\n".join(done))
    return 0
