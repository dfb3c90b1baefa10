"""Build script: compiles the hot paths in robustmq/_core (Cython) and csrc (plain C).

Every ``robustmq/_core/_<name>.pyx`` becomes the extension ``robustmq._core._<name>``, the
compiled twin of the pure-Python ``robustmq/_core/<name>.py``. Plain C sources an extension
needs are listed in ``C_SOURCES``. When the compiler or Cython is missing the pure-Python
package is installed instead, and this script says so (``ROBUSTMQ_REQUIRE_EXTENSIONS=1``
turns that into an error, which CI uses).

Switches: ``ROBUSTMQ_DEBUG=1`` builds with line tracing, ``-O0 -g`` and invariant checks;
``ROBUSTMQ_NO_EXTENSIONS=1`` skips the compiled twins altogether.
"""

import glob
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
DEBUG = os.environ.get("ROBUSTMQ_DEBUG") == "1"
NO_EXTENSIONS = os.environ.get("ROBUSTMQ_NO_EXTENSIONS") == "1"
REQUIRE_EXTENSIONS = os.environ.get("ROBUSTMQ_REQUIRE_EXTENSIONS") == "1"

# Plain C files (relative to the project root) linked into a given extension.
C_SOURCES: dict[str, list[str]] = {"robustmq._core._segment_io": ["csrc/crc32c.c"]}


def _extensions() -> list[Extension]:
    if NO_EXTENSIONS:
        return []
    from Cython.Build import cythonize

    cflags = ["-Wall", "-Wno-unused-function"]
    macros = []
    if DEBUG:
        cflags += ["-O0", "-g3"]
        macros += [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1"), ("ROBUSTMQ_DEBUG", "1")]
    else:
        cflags += ["-O2"]
    exts = []
    for pyx in sorted(glob.glob(os.path.join("robustmq", "_core", "_*.pyx"))):
        name = os.path.splitext(pyx)[0].replace(os.sep, ".")
        exts.append(
            Extension(
                name,
                [pyx, *C_SOURCES.get(name, [])],
                include_dirs=["csrc", os.path.join("robustmq", "_core")],
                extra_compile_args=cflags,
                define_macros=macros,
            )
        )
    return cythonize(
        exts,
        language_level=3,
        compiler_directives={
            "boundscheck": DEBUG,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
            "linetrace": DEBUG,
        },
        annotate=DEBUG,
    )


class ReportingBuildExt(build_ext):
    """Builds the extensions, falls back to pure Python on failure, and says which it did."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # compiler missing or broken
            self._fallback(exc)
            return
        built = [e.name for e in self.extensions]
        print(f"robustmq: built the accelerated package ({', '.join(built)})", file=sys.stderr)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._fallback(exc, ext.name)

    def _fallback(self, exc: Exception, name: str = "all extensions") -> None:
        if REQUIRE_EXTENSIONS:
            raise exc
        print(
            f"robustmq: WARNING: could not compile {name} ({exc}); "
            "installing the pure-Python package, which is several times slower",
            file=sys.stderr,
        )


try:
    EXTENSIONS = _extensions()
except ImportError as exc:  # Cython missing outside an isolated build
    if REQUIRE_EXTENSIONS:
        raise
    print(f"robustmq: WARNING: {exc}; building the pure-Python package", file=sys.stderr)
    EXTENSIONS = []

if NO_EXTENSIONS:
    print("robustmq: ROBUSTMQ_NO_EXTENSIONS=1, building the pure-Python package", file=sys.stderr)

setup(ext_modules=EXTENSIONS, cmdclass={"build_ext": ReportingBuildExt})
