"""migproxy: a rewriting proxy for QEMU live migration of ARM virtual machines.

The layers, each importing only the ones below it (checked by ``tests/test_layers.py``)::

    cli                      migproxy.cli, migproxy.__main__
    daemon    tools          migproxy.daemon (live), migproxy.tools (offline)
    arm                      the ARM plug-in
    stream                   the pure core: framing and rewriting, no I/O

The product never imports ``migproxy.lab`` (the QEMU test harness, in the checkout but
not in the wheel), ``testkit``, ``bench`` or ``tests``.
"""

__version__ = "0.1.0"
