"""Why the ARM plug-in refuses to rewrite a cpu section: its own stop reasons
(:class:`~migproxy.stream.reasons.StopReason`), next to the core's. The ARM rewriter lists
them (``reasons``), so that their metrics series exist from the start."""

from __future__ import annotations

from migproxy.stream.reasons import StopReason


class ArmReason(StopReason):
    CPU_LAYOUT = "cpu_layout"  # an ARM cpu section not in the layout migproxy rewrites
    PROFILE_REFUSED = "profile_refused"  # a profile rule's condition does not hold
    NO_MANIFEST = "no_manifest"  # the destination has no manifest for the machine type
    UNSAFE_REWRITE = "unsafe_rewrite"  # the destination needs a change the guest could see
    # (or that loses state) and neither the knowledge base nor an opt-in allows it
