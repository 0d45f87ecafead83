"""The gRPC face: one module per group of CRI RPCs, each a mixin whose
methods translate protobuf to crispy's own calls on the daemon's parts."""
