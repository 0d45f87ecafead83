"""The `crispy` command: runs the daemon, or one of its helper subcommands.

One function per subcommand (`_cmd_<name>`, taking the loaded config and
the parsed arguments); the bigger ones live in modules beside this one
(cli_status, cli_check, install). Config flags are accepted before or
after the subcommand: every subcommand's parser carries them too."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable
from typing import Any

from cri import config as configmod
from cri import config_files, config_toml, logsetup
from runtime.errors import CrispyError

log = logging.getLogger("crispy")

DEFAULT_PREFIX = "/opt/crispy"


# Config flags given after the subcommand land under this prefix first, so
# that repeatable ones (--set, list keys) add to those given before it
# instead of replacing them.
AFTER = "after:"


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    configmod.add_flags(common, dest_prefix=AFTER)
    parser = argparse.ArgumentParser(
        prog="crispy",
        description="crispy: a Kubernetes CRI v1 container runtime. With no subcommand, runs the daemon. "
                    "Config flags may come before or after the subcommand.")
    configmod.add_flags(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=text, description=text)

    add("serve", "run the daemon (the default)")
    add("version", "print crispy's version")
    cfg = add("config", "print the effective configuration as TOML (a valid crispy.toml that loads back to the same "
                        "configuration)")
    what = cfg.add_mutually_exclusive_group()
    what.add_argument("--default", action="store_true",
                      help="print the built-in defaults instead, ignoring files and flags (default: off)")
    what.add_argument("--origins", action="store_true",
                      help="print every key on its own line with the file:line or flag that set it, or 'default' "
                           "(default: off)")
    add("cni-install", "write crispy's default pod network into [cni] conf_dir if it has none")
    load = add("load", "import an OCI image layout or docker save archive into the image store "
                       "(works while the daemon runs)")
    load.add_argument("path", metavar="PATH", help="OCI layout directory, or a tar of one, or a docker save archive")
    status = add("status", "ask the running daemon over its socket: up?, version, runtime and network conditions, "
                           "pod and container counts; exit 1 if it does not answer or is not ready")
    status.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                        help="seconds to wait for the daemon to answer (default: 5)")
    add("check", "preflight this host: kernel features, cgroups, OCI runtimes, conmon, CNI, overlayfs, idmapped "
                 "mounts; one verdict per line, exit 1 if crispy cannot run here")
    inst = add("install", "put crispy on this node: a venv under --prefix, a systemd unit, the default config if "
                          "none exists, the default CNI network (as cni-install)")
    uninst = add("uninstall", "remove what `crispy install` put on this node; images and pod data stay unless "
                              "--purge")
    inst.add_argument("--prefix", default=DEFAULT_PREFIX, metavar="DIR",
                      help=f"where the venv goes (default: {DEFAULT_PREFIX})")
    uninst.add_argument("--prefix", default=DEFAULT_PREFIX, metavar="DIR",
                        help=f"where crispy was installed; its install-manifest.json lists what to remove (default: "
                             f"{DEFAULT_PREFIX})")
    inst.add_argument("--unit-dir", default="/etc/systemd/system", metavar="DIR",
                      help="where the systemd unit goes (default: /etc/systemd/system)")
    inst.add_argument("--config-dir", default=str(configmod.DEFAULT_CONFIG_PATH.parent), metavar="DIR",
                      help=f"where crispy.toml goes (default: {configmod.DEFAULT_CONFIG_PATH.parent})")
    inst.add_argument("--source", default=None, metavar="PATH",
                      help="what to pip install into the venv: a checkout, sdist or wheel (default: the checkout "
                           "this crispy runs from, else the local directory or file pip installed it from)")
    inst.add_argument("--no-venv", action="store_true",
                      help="use this Python's crispy instead of making a venv (default: make one)")
    uninst.add_argument("--purge", action="store_true",
                        help="also delete data_root and state_root (images, pods, records) (default: keep them)")
    _add_explain(sub, [common])
    return parser


def _fold(args: argparse.Namespace) -> argparse.Namespace:
    """Config flags from after the subcommand onto those from before it:
    lists extended, single values replaced (the later one wins)."""
    for name, value in list(vars(args).items()):
        if not name.startswith(AFTER):
            continue
        delattr(args, name)
        base = name[len(AFTER):]
        before = getattr(args, base, None)
        setattr(args, base, before + value if isinstance(before, list) and isinstance(value, list) else value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = _fold(_parser().parse_args(argv))
    command = args.command or "serve"
    if command == "config" and args.default:
        print(config_toml.dumps(configmod.Config().to_dict()), end="")
        return 0
    if command == "check":
        # The check reports a broken config as one of its lines.
        from cri import cli_check
        return cli_check.run(args)
    try:
        cfg, merged = configmod.load_layers(args)
    except CrispyError as e:
        print(f"crispy: {e.message}", file=sys.stderr)
        return 2
    logsetup.setup(cfg.log_level, cfg.log_format)
    if command == "config":
        return _cmd_config(cfg, merged, args)
    return COMMANDS[command](cfg, args)


def _add_explain(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "explain", parents=parents,
        help="show what a pod or container really is on this node (namespaces, cgroups, layers, mounts, "
             "security, network), as the kernel sees it; needs the daemon running",
        description="NAME_OR_ID is an ID, a unique ID prefix, or a pod or container name (for a container name, "
                    "the latest attempt). Prefix it with pod/ or container/ when a pod and a container share a name.")
    p.add_argument("target", metavar="NAME_OR_ID")
    p.add_argument("--namespace", "-n", default="", help="only consider pods in this Kubernetes namespace")
    p.add_argument("--json", action="store_true", help="print the report as JSON (the same facts)")
    p.add_argument("--path", default="", metavar="P",
                   help="say where path P inside the container comes from: a mount, the container's own writes, "
                        "or which image layer")


def _cmd_config(cfg: configmod.Config, merged: config_files.Merged, args: argparse.Namespace) -> int:
    if args.origins:
        print(config_toml.origins(cfg.to_dict(), merged), end="")
    else:
        print(config_toml.dumps(cfg.to_dict()), end="")
    return 0


def _cmd_version(cfg: configmod.Config, args: argparse.Namespace) -> int:
    from cri.daemon import package_version
    print(f"crispy {package_version()}")
    return 0


def _cmd_serve(cfg: configmod.Config, args: argparse.Namespace) -> int:
    from cri.daemon import Daemon, StartupError
    try:
        daemon = Daemon(cfg, reload=lambda: configmod.load(args))
        daemon.check_usable()
        asyncio.run(daemon.serve_until_signalled())
    except StartupError as e:
        log.error(str(e))
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


def _cmd_status(cfg: configmod.Config, args: argparse.Namespace) -> int:
    from cri import cli_status
    return cli_status.run(cfg.socket, args.timeout)


def _cmd_install(cfg: configmod.Config, args: argparse.Namespace) -> int:
    from cri import install
    return install.run_install(cfg, args)


def _cmd_uninstall(cfg: configmod.Config, args: argparse.Namespace) -> int:
    from cri import install
    return install.run_uninstall(cfg, args)


def _cmd_load(cfg: configmod.Config, args: argparse.Namespace) -> int:
    # The image store is shared with a running daemon through file locks, so
    # this works with or without one; the daemon sees new records at once.
    from pathlib import Path

    from images.manager import ImageManager

    async def run() -> list:
        images = ImageManager(cfg, Path(cfg.data_root), lambda _id: [])
        await images.open()
        return await images.import_archive(args.path)
    try:
        records = asyncio.run(run())
    except CrispyError as e:
        print(f"crispy load: {e.message}", file=sys.stderr)
        return 1
    for rec in records:
        print(f"{rec.id} {' '.join(rec.repo_tags) or '<untagged>'}")
    return 0


def _cmd_cni_install(cfg: configmod.Config, args: argparse.Namespace) -> int:
    from runtime.cni import default_network
    try:
        path, message = default_network.install_for(cfg.cni, cfg.data_root)
    except (CrispyError, OSError) as e:
        print(f"crispy cni-install: {getattr(e, 'message', None) or e}", file=sys.stderr)
        return 1
    print(message)
    return 0


def _cmd_explain(cfg: configmod.Config, args: argparse.Namespace) -> int:
    from cri import explain_cli
    return explain_cli.main(cfg, args)


COMMANDS: dict[str, Callable[[configmod.Config, argparse.Namespace], int]] = {
    "serve": _cmd_serve,
    "version": _cmd_version,
    "status": _cmd_status,
    "install": _cmd_install,
    "uninstall": _cmd_uninstall,
    "load": _cmd_load,
    "cni-install": _cmd_cni_install,
    "explain": _cmd_explain,
}


if __name__ == "__main__":
    sys.exit(main())
