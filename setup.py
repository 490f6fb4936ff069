"""Build hook for the compiled RAM record walk (migproxy/stream/_ramwalk.c), the RAM
pump (migproxy/daemon/_rampump.c), which share the walk (migproxy/stream/ramwalk.h), and
the kernel relay's loop (migproxy/daemon/_kernelrelay.c).

Everything else is in pyproject.toml. The compiled walk is the default: on a fragmented
guest the pure-Python walk costs 10-20 times more per record, on the critical path of every
migration. So a failed build (no C compiler, no Python headers: Debian's gcc and
python3-dev) fails the install with the reason, unless MIGPROXY_PYTHON_WALK=1 is set at
build time, which installs the pure-Python walk on purpose (with a warning; no RAM pump
then either: every main channel stays on the event loop; and the kernel relay runs its
Python loop). At run time, MIGPROXY_NO_EXTENSIONS=1 uses the Python walk, no pump and the
Python relay loop even when all are built.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPT_OUT = "MIGPROXY_PYTHON_WALK"


class RamWalkBuildExt(build_ext):
    """Build the compiled walk; a failure stops the install unless opted out."""

    def _failed(self, e: Exception) -> None:
        if os.environ.get(OPT_OUT) == "1":
            self.warn(f"migproxy: the compiled RAM walk is not built ({e}); {OPT_OUT}=1: the "
                      "pure-Python walk (10-20x slower per record) is used")
            return
        raise SystemExit(
            f"migproxy: the compiled RAM walk (migproxy/stream/_ramwalk.c) could not be "
            f"built: {e}\n  Install a C compiler and the Python headers (Debian: apt-get "
            f"install gcc python3-dev), or set {OPT_OUT}=1 to install the pure-Python walk "
            "(10-20x slower per record on fragmented guests).")

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # no compiler at all
            self._failed(e)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as e:  # a compiler or headers missing
            self._failed(e)


EXTENSIONS = [
    Extension("migproxy.stream._ramwalk", ["migproxy/stream/_ramwalk.c"],
              depends=["migproxy/stream/ramwalk.h"], extra_compile_args=["-O2"]),
]
if sys.platform.startswith("linux"):  # splice(2), tee(2): the pump and relay loop are Linux only
    EXTENSIONS.append(
        Extension("migproxy.daemon._rampump", ["migproxy/daemon/_rampump.c"],
                  include_dirs=["migproxy/stream"], depends=["migproxy/stream/ramwalk.h"],
                  extra_compile_args=["-O2"]))
    EXTENSIONS.append(
        Extension("migproxy.daemon._kernelrelay", ["migproxy/daemon/_kernelrelay.c"],
                  extra_compile_args=["-O2"]))

setup(
    ext_modules=EXTENSIONS,
    cmdclass={"build_ext": RamWalkBuildExt},
)
