"""The ARM plug-in: the ``cpu`` section, its cpreg arrays, and what a destination accepts.

Layer contract (checked by ``tests/test_layers.py``): this package imports only
:mod:`migproxy.stream` (and itself). Sans-IO apart from reading its data files (the
shipped profiles, manifests and knowledge base).

Public API:

- :mod:`migproxy.arm.rewriter`: ``arm_engine_config`` (an ``EngineConfig`` with the ARM
  ``cpu`` rewriter), ``ArmCpuRewriter``;
- :mod:`migproxy.arm.profile`: ``Profile`` (``Profile.plan`` compiles its rules into a
  ``CpuPlan``), ``load_profile``, ``parse_profile``, ``default_profile``,
  ``builtin_profiles``, ``ProfileError``;
- :mod:`migproxy.arm.destination`: ``Destination`` (manifests, knowledge, opt-ins),
  ``where``, ``ReconcileRefused``;
- :mod:`migproxy.arm.manifest`: ``Manifest``, ``ManifestSet``, ``load_set``,
  ``shipped_sets``, ``ManifestError``;
- :mod:`migproxy.arm.reconcile` / :mod:`migproxy.arm.reconcile_kvm`: ``reconcile``,
  ``reconcile_kvm``;
- :mod:`migproxy.arm.plan`: ``CpuPlan``, ``Change`` (what a destination or a profile
  does to one cpu section; ``ArmCpuRewriter`` carries out either), ``RewriteRefused``;
- :mod:`migproxy.arm.knowledge`: ``Knowledge``, ``knowledge``, ``SubsectionRule`` (of the
  knowledge base and of profiles);
- :mod:`migproxy.arm.registers`: ``parse_register``, ``describe``, ``format_id``;
- :mod:`migproxy.arm.events`: ``CpuSeen``, ``CpuRewritten``, ``CpuReconciled``,
  ``CpuState``, ``seen_cpus``.
"""
