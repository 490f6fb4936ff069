"""migproxy: a rewriting proxy for QEMU live migration of ARM virtual machines."""

__version__ = "0.1.0"
