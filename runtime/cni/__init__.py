"""Pod networking through CNI plugins (the CNI spec, versions 0.3.x, 0.4.0
and 1.0.0): finding the network config, invoking plugins, and the
`CniNetwork` the daemon hands pods to."""

from runtime.cni.hostip import host_primary_ip
from runtime.cni.network import CniNetwork, host_network_status

__all__ = ["CniNetwork", "host_network_status", "host_primary_ip"]
