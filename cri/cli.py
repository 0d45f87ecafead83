"""The `crispy` command: runs the daemon, or one of its helper subcommands."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from cri import config as configmod
from cri import logsetup
from runtime.errors import CrispyError

log = logging.getLogger("crispy")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crispy",
        description="crispy: a Kubernetes CRI v1 container runtime. With no subcommand, runs the daemon.")
    configmod.add_flags(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("serve", help="run the daemon (the default)")
    sub.add_parser("version", help="print crispy's version")
    sub.add_parser("config", help="print the effective configuration as TOML-ish JSON")
    sub.add_parser("cni-install", help="write crispy's default pod network into [cni] conf_dir if it has none")
    load = sub.add_parser("load", help="import an OCI image layout or docker save archive into the image store "
                                       "(works while the daemon runs)")
    load.add_argument("path", metavar="PATH", help="OCI layout directory, or a tar of one, or a docker save archive")
    from cri import explain_cli
    explain_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = configmod.load(args)
    except CrispyError as e:
        print(f"crispy: {e.message}", file=sys.stderr)
        return 2
    logsetup.setup(cfg.log_level, cfg.log_format)
    command = args.command or "serve"
    if command == "version":
        from cri.daemon import package_version
        print(f"crispy {package_version()}")
        return 0
    if command == "config":
        import json
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    if command == "cni-install":
        return _cni_install(cfg)
    if command == "load":
        return _load(cfg, args.path)
    if command == "explain":
        from cri import explain_cli
        return explain_cli.main(cfg, args)
    from cri.daemon import Daemon, StartupError
    try:
        daemon = Daemon(cfg)
        daemon.check_usable()
        asyncio.run(daemon.serve_until_signalled())
    except StartupError as e:
        log.error(str(e))
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


def _load(cfg: configmod.Config, path: str) -> int:
    # The image store is shared with a running daemon through file locks, so
    # this works with or without one; the daemon sees new records at once.
    from pathlib import Path

    from images.manager import ImageManager

    async def run() -> list:
        images = ImageManager(cfg, Path(cfg.data_root), lambda _id: [])
        await images.open()
        return await images.import_archive(path)
    try:
        records = asyncio.run(run())
    except CrispyError as e:
        print(f"crispy load: {e.message}", file=sys.stderr)
        return 1
    for rec in records:
        print(f"{rec.id} {' '.join(rec.repo_tags) or '<untagged>'}")
    return 0


def _cni_install(cfg: configmod.Config) -> int:
    from runtime.cni import default_network
    try:
        path, message = default_network.install_for(cfg.cni, cfg.data_root)
    except (CrispyError, OSError) as e:
        print(f"crispy cni-install: {getattr(e, 'message', None) or e}", file=sys.stderr)
        return 1
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
