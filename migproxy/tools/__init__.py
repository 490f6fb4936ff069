"""The offline tools behind the CLI's subcommands: saved streams and libvirt save images.

Layer contract (checked by ``tests/test_layers.py``): this package imports
:mod:`migproxy.stream`, :mod:`migproxy.arm` and itself; never :mod:`migproxy.daemon`,
:mod:`migproxy.cli` or the lab.

Public API:

- :mod:`migproxy.tools.offline`: ``run_file``, ``rewrite_file`` (``migproxy rewrite``);
- :mod:`migproxy.tools.inspect`: ``inspect_file``, ``format_report`` (``migproxy inspect``);
- :mod:`migproxy.tools.cpregs_diff`: ``diff_streams``, ``format_diff``,
  ``profile_from_diff`` (``migproxy cpregs diff``);
- :mod:`migproxy.tools.manifest`: ``capture``, ``manifest_from_stream``,
  ``write_manifest`` (``migproxy manifest``);
- :mod:`migproxy.tools.qmp`: ``QMPClient``, ``QMPError``, ``QMPConnectionError`` (the one
  QMP client: ``manifest capture`` and the QEMU lab);
- :mod:`migproxy.tools.fleet`: the fleet view (``migproxy plan --fleet``);
- :mod:`migproxy.tools.saveimage`, :mod:`migproxy.tools.compression`: libvirt save images;
- :mod:`migproxy.tools.saves`: ``rewrite_saves``, ``clean_saves`` (``migproxy saves``:
  libvirt's managed-save directory rewritten in place).
"""
