"""nodecfg: point an offline Kubernetes fleet's container runtimes at a local registry, over SSH."""

__version__ = "0.1.0"
