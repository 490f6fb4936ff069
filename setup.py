"""Build hook for the optional compiled RAM record walk (migproxy/stream/_ramwalk.c).

Everything else is in pyproject.toml. Without a C compiler (or Python headers) the
extension is skipped with a warning and migproxy uses its pure-Python walk; set
MIGPROXY_NO_EXTENSIONS=1 at run time to use the Python walk even when it is built.
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """A failed build of the extension is a warning, never a failed install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # no compiler at all
            self.warn(f"migproxy: the compiled RAM walk is not built ({e}); "
                      "the pure-Python one is used")

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as e:  # a compiler or headers missing
            self.warn(f"migproxy: {ext.name} is not built ({e}); the pure-Python walk is used")


setup(
    ext_modules=[Extension("migproxy.stream._ramwalk", ["migproxy/stream/_ramwalk.c"],
                           optional=True, extra_compile_args=["-O2"])],
    cmdclass={"build_ext": OptionalBuildExt},
)
