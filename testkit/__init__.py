"""Test helpers, importable from the checkout (never shipped, never imported by migproxy).

- ``testkit.streams``: the captured real streams of ``tests/data``, an engine driver
  (``run_engine``), ``split_at``, ``with_return_path``;
- ``testkit.labs``: the QEMU labs and the programs a test needs: skip, or fail under
  ``MIGPROXY_REQUIRE_LAB`` / ``MIGPROXY_REQUIRE_KVM_LAB`` / ``MIGPROXY_REQUIRE_TOOLS``;
- ``testkit.synthetic``: synthetic migration streams built byte by byte;
- ``testkit.hostile``: hostile streams for the daemon;
- ``testkit.loopback``: loopback TCP helpers;
- ``testkit.pki``: a test CA and certificates (``openssl``);
- ``testkit.saveimage``: libvirt save images written the way libvirt writes them;
- ``testkit.fuzz``: the coverage-guided fuzz target of the engine and the save-image reader.

Fixtures stay in ``tests/conftest.py`` files; test modules import helpers from here.
"""
