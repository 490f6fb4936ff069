"""The QMP client over a QEMU's standard input and output (``-qmp stdio``), against a
stand-in process that speaks the protocol's framing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from migproxy.tools.qmp import QMPClient, QMPConnectionError, QMPError

# Greets (after an event), then answers each command: an error for "fail", the process
# exits on "quit" without answering, anything else returns its own name.
_FAKE_QEMU = r"""
import json, sys
def send(m):
    sys.stdout.write(json.dumps(m) + "\r\n"); sys.stdout.flush()
send({"event": "RESUME", "timestamp": {}})
send({"QMP": {"version": {}, "capabilities": []}})
for line in sys.stdin:
    req = json.loads(line)
    if req["execute"] == "quit":
        break
    send({"event": "STOP", "timestamp": {}})
    if req["execute"] == "fail":
        send({"error": {"class": "GenericError", "desc": "no"}, "id": req["id"]})
    else:
        send({"return": req["execute"], "id": req["id"]})
"""


def test_a_client_over_pipes_negotiates_runs_commands_and_keeps_events() -> None:
    proc = subprocess.Popen([sys.executable, "-c", _FAKE_QEMU], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        qmp = QMPClient.over_pipes(proc.stdin, proc.stdout, timeout=30)
        assert "QMP" in qmp.greeting
        assert qmp.connected
        assert qmp.execute("query-status", timeout=30) == "query-status"
        with pytest.raises(QMPError, match="QMP fail: GenericError: no") as err:
            qmp.execute("fail", timeout=30)
        assert err.value.desc == "no"
        assert [e["event"] for e in qmp.events] == ["RESUME", "STOP", "STOP", "STOP"]
        assert qmp.wait_event("RESUME")["event"] == "RESUME"
        with pytest.raises(QMPConnectionError, match="closed"):
            qmp.execute("quit", timeout=30)
    finally:
        proc.stdin.close()
        proc.wait(30)
        proc.stdout.close()
