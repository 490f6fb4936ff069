"""Constants of the QEMU migration wire format (main channel).

Values are facts of the format, from QEMU's ``migration/savevm.c``, ``migration/ram.c``
and ``migration/migration.h``; the grammar itself is in :mod:`migproxy.stream.framer` (the
streamed part) and :mod:`migproxy.stream.vmdesc` (the non-iterable device state).
"""

from __future__ import annotations

import struct

FILE_MAGIC = 0x5145564D  # "QEVM"
FILE_VERSION = 3
MAGIC_BYTES = b"QEVM"

# Top-level record types.
VM_EOF = 0x00
VM_SECTION_START = 0x01
VM_SECTION_PART = 0x02
VM_SECTION_END = 0x03
VM_SECTION_FULL = 0x04
VM_SUBSECTION = 0x05
VM_VMDESCRIPTION = 0x06
VM_CONFIGURATION = 0x07
VM_COMMAND = 0x08
VM_SECTION_FOOTER = 0x7E

RECORD_NAMES = {
    VM_EOF: "EOF",
    VM_SECTION_START: "START",
    VM_SECTION_PART: "PART",
    VM_SECTION_END: "END",
    VM_SECTION_FULL: "FULL",
    VM_VMDESCRIPTION: "VMDESCRIPTION",
    VM_CONFIGURATION: "CONFIGURATION",
    VM_COMMAND: "COMMAND",
}

# MIG_CMD_* values and their payload lengths (None: variable length).
CMD_OPEN_RETURN_PATH = 1
CMD_PING = 2
CMD_POSTCOPY_ADVISE = 3
CMD_POSTCOPY_LISTEN = 4
CMD_POSTCOPY_RUN = 5
CMD_POSTCOPY_RAM_DISCARD = 6
CMD_PACKAGED = 7
CMD_ENABLE_COLO = 8
CMD_POSTCOPY_RESUME = 9
CMD_RECV_BITMAP = 10
CMD_SWITCHOVER_START = 11

COMMANDS: dict[int, tuple[str, int | None]] = {
    CMD_OPEN_RETURN_PATH: ("OPEN_RETURN_PATH", 0),
    CMD_PING: ("PING", 4),
    CMD_POSTCOPY_ADVISE: ("POSTCOPY_ADVISE", None),  # 0 or 16
    CMD_POSTCOPY_LISTEN: ("POSTCOPY_LISTEN", 0),
    CMD_POSTCOPY_RUN: ("POSTCOPY_RUN", 0),
    CMD_POSTCOPY_RAM_DISCARD: ("POSTCOPY_RAM_DISCARD", None),
    CMD_PACKAGED: ("PACKAGED", 4),
    CMD_ENABLE_COLO: ("ENABLE_COLO", 0),
    CMD_POSTCOPY_RESUME: ("POSTCOPY_RESUME", 0),
    CMD_RECV_BITMAP: ("RECV_BITMAP", None),
    CMD_SWITCHOVER_START: ("SWITCHOVER_START", 0),
}

# RAM_SAVE_FLAG_* (low bits of each be64 record word).
RAM_FULL = 0x001  # obsolete, never sent
RAM_ZERO = 0x002
RAM_MEM_SIZE = 0x004
RAM_PAGE = 0x008
RAM_EOS = 0x010
RAM_CONTINUE = 0x020
RAM_XBZRLE = 0x040
RAM_HOOK = 0x080
RAM_COMPRESS_PAGE = 0x100
RAM_MULTIFD_FLUSH = 0x200

RAM_SECTION_VERSION = 4
XBZRLE_ENCODING_FLAG = 0x01

# Multifd init packet magic (first 4 bytes of a multifd channel).
MULTIFD_MAGIC = 0x11223344
MULTIFD_MAGIC_BYTES = struct.pack(">I", MULTIFD_MAGIC)

BE16 = struct.Struct(">H")
BE32 = struct.Struct(">I")
BE64 = struct.Struct(">Q")

Buffer = bytes | bytearray | memoryview  # what the parsers read from
