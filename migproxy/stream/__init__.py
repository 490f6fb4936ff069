"""The pure core: the QEMU migration stream, framed and rewritten without I/O.

Layer contract (checked by ``tests/test_layers.py``): this package imports nothing else of
migproxy. No sockets, no clocks, no asyncio, no architecture: section rewriters are
plug-ins (:mod:`migproxy.stream.rewriter`); the ARM one is :mod:`migproxy.arm`.

Public API:

- :mod:`migproxy.stream.engine`: ``StreamEngine`` (``feed``, ``feed_eof``, ``conclude``,
  ``end_pending``), ``EngineConfig``, ``FeedResult``, ``Mode``;
- :mod:`migproxy.stream.rewriter`: ``SectionRewriter`` and the edits it returns
  (``SectionEdit``, ``Splice``), the plug-in interface;
- :mod:`migproxy.stream.events`: the events the engine reports (``ItemFramed`` and the
  rest, ``PassthroughEntered``, ``Aborted``, ...);
- :mod:`migproxy.stream.reasons`: ``Reason``, every reason the engine stops rewriting;
- :mod:`migproxy.stream.errors`: ``MigproxyError``, the root of migproxy's errors;
- :mod:`migproxy.stream.policy`: ``Policy``, ``HoldBudget`` and the size limits;
- :mod:`migproxy.stream.returnpath`: ``ReturnPathReader``;
- :mod:`migproxy.stream.wire`: the wire format's constants.
- :mod:`migproxy.stream.tomlfile`: ``load_toml_file``, an operator's TOML file read within
  bounds (size and nesting).

The engine's internals: its state and stop (``enginestate``), the writer of the held device
state (``writer``), the detection of its end (``enddetect``); the framer of the streamed
part (``framer``, with ``framerstate``, ``configuration``, ``ramsection`` and ``ramruns``);
the held device state (``devstate``), the VM description (``vmdesc``) and ``_ramwalk``
(the compiled RAM walk, chosen in ``ramsection``).
"""
