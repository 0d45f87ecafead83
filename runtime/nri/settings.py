"""NRI's configuration, as the daemon hands it to the plugin server.

The names and defaults follow containerd 2.x's [plugins."io.containerd.nri.v1.nri"]
table, except that crispy spells the switch `enable` (containerd: `disable`,
default false) and drops the `plugin_` prefix of the two timeouts
(containerd: `plugin_registration_timeout`, `plugin_request_timeout`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NriSettings:
    # NRI on (as in containerd 2.x); false: no socket, no plugins, no calls.
    enable: bool = True
    # Where external plugins connect (containerd/nri's DefaultSocketPath).
    socket_path: str = "/var/run/nri/nri.sock"
    # Pre-installed plugins, started by crispy: executables named NN-name.
    plugin_path: str = "/opt/nri/plugins"
    # Their configuration: NN-name.conf, else name.conf.
    plugin_config_path: str = "/etc/nri/conf.d"
    # Seconds a plugin has to register after connecting or being started.
    registration_timeout: float = 5.0
    # Seconds a plugin has to answer any request.
    request_timeout: float = 2.0
    # Only pre-installed plugins; no socket for external ones.
    disable_connections: bool = False
