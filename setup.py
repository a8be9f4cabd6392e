"""Build script for gilfree's one C extension, ``gilfree._core``.

Project metadata lives in pyproject.toml; this file only says how the
extension is compiled and where the public header goes.

The extension is every ``src/gilfree/_core/*.c`` (the only code that includes
Python.h) plus the C runtime ``src/runtime/*.c`` (which never does), linked
into one shared object so the runtime's symbols stay private to it
(``-fvisibility=hidden``; only ``PyInit__core`` is exported).

Compiler flags are switched by environment variables, read at build time:

    GILFREE_WERROR=1           add -Werror (CI sets it; see .ci/run)
    GILFREE_DEBUG=1            -O0 -g3 -UNDEBUG: no optimisation, asserts on
    GILFREE_SANITIZE=address   AddressSanitizer + UndefinedBehaviorSanitizer
    GILFREE_SANITIZE=undefined UndefinedBehaviorSanitizer alone
    GILFREE_SANITIZE=thread    ThreadSanitizer
    GILFREE_BUILD_JOBS=N       compile N sources at once (default: the cores)

A sanitized extension needs the sanitizer runtime loaded before Python
starts, since python itself is not linked against it, for example:

    GILFREE_SANITIZE=address GILFREE_DEBUG=1 .venv/3.13/bin/pip install -e .
    LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 \
        .venv/3.13/bin/python -m pytest -q

(detect_leaks=0 because CPython keeps interned objects alive at exit; for
GILFREE_SANITIZE=thread preload libtsan.so the same way.  Both were checked
on 3.13 with tests/python/test_futures.py.  `make rebuild` goes back to a
normal build.)
"""

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from glob import glob

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext as _build_ext
from setuptools.command.build_py import build_py as _build_py

HEADER = os.path.join("include", "gilfree.h")


def _flag(name):
    return os.environ.get(name, "").strip().lower() not in ("", "0", "no", "false")


def _sanitizer_flags():
    """Compile and link flags for GILFREE_SANITIZE, or none."""
    kind = os.environ.get("GILFREE_SANITIZE", "").strip().lower()
    if kind in ("", "0", "none"):
        return []
    which = {
        "address": "address,undefined",
        "asan": "address,undefined",
        "undefined": "undefined",
        "ubsan": "undefined",
        "thread": "thread",
        "tsan": "thread",
    }.get(kind)
    if which is None:
        raise SystemExit(
            f"GILFREE_SANITIZE={kind!r}: expected address, undefined or thread"
        )
    # A sanitizer report is only useful with whole stacks and without the
    # recovery that would let UB run on past the first report.
    return [f"-fsanitize={which}", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"]


def compile_args():
    # -D_GNU_SOURCE: the runtime uses syscall(), pthread_setname_np, memfd and
    # CLOCK_MONOTONIC, none of which strict -std=c11 declares without it.
    # pyconfig.h defines it to the same value, so there is no redefinition.
    args = ["-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-fvisibility=hidden", "-pthread"]
    if _flag("GILFREE_DEBUG"):
        # Placed after Python's own CFLAGS (-O3 -DNDEBUG), so these win.
        args += ["-O0", "-g3", "-UNDEBUG", "-fno-omit-frame-pointer"]
    else:
        args += ["-O2"]
    if _flag("GILFREE_WERROR"):
        args += ["-Werror"]
    return args + _sanitizer_flags()


def link_args():
    return ["-pthread"] + _sanitizer_flags()


class build_ext(_build_ext):
    """Compiles the extension's sources in parallel, one job per core.

    distutils' own ``parallel`` option only builds separate extensions side by
    side; gilfree has one extension made of many files, so the sources of that
    one are spread over a thread pool instead (the threads only wait on gcc).
    """

    def build_extension(self, ext):
        jobs = _jobs()
        compiler = self.compiler
        needed = ("_setup_compile", "_get_cc_args", "_compile")
        if jobs > 1 and all(hasattr(compiler, n) for n in needed):
            compiler.compile = _parallel_compile.__get__(compiler)
            compiler._gilfree_jobs = jobs
        super().build_extension(ext)


def _jobs():
    env = os.environ.get("GILFREE_BUILD_JOBS", "").strip()
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _parallel_compile(self, sources, output_dir=None, macros=None, include_dirs=None,
                      debug=0, extra_preargs=None, extra_postargs=None, depends=None):
    # The same steps as distutils' CCompiler.compile, with the per-object loop
    # run on a pool: the first failure is re-raised once all jobs have ended.
    macros, objects, extra_postargs, pp_opts, build = self._setup_compile(
        output_dir, macros, include_dirs, sources, depends, extra_postargs
    )
    cc_args = self._get_cc_args(pp_opts, debug, extra_preargs)

    def one(obj):
        src, ext = build[obj]
        self._compile(obj, src, ext, cc_args, extra_postargs, pp_opts)

    with ThreadPoolExecutor(self._gilfree_jobs) as pool:
        for _ in pool.map(one, [o for o in objects if o in build]):
            pass
    return objects


class build_py(_build_py):
    """Also installs the public C header as ``gilfree/include/gilfree.h``.

    ``gilfree.get_include()`` returns the ``include`` folder next to the
    package's ``__init__.py``.  A normal build copies the header into the
    build tree, so it lands in the wheel.  An editable install imports the
    package from ``src/``, so there the header is copied to
    ``src/gilfree/include/`` (a build output, ignored by git; run
    ``pip install -e .`` again after editing ``include/gilfree.h``).
    """

    def run(self):
        super().run()
        if not os.path.exists(HEADER):
            self.warn(f"{HEADER} is missing: gilfree.get_include() will find no header")
            return
        if getattr(self, "editable_mode", False):
            dest = os.path.join("src", "gilfree", "include")
        else:
            dest = os.path.join(self.build_lib, "gilfree", "include")
        os.makedirs(dest, exist_ok=True)
        shutil.copy2(HEADER, os.path.join(dest, "gilfree.h"))

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        if os.path.exists(HEADER) and not getattr(self, "editable_mode", False):
            outputs.append(os.path.join(self.build_lib, "gilfree", "include", "gilfree.h"))
        return outputs


SOURCES = sorted(glob("src/gilfree/_core/*.c")) + sorted(glob("src/runtime/*.c"))
HEADERS = sorted(
    glob("include/*.h") + glob("src/gilfree/_core/*.h") + glob("src/runtime/*.h")
)

setup(
    ext_modules=[
        Extension(
            "gilfree._core",
            sources=SOURCES,
            depends=HEADERS,  # a changed header rebuilds the extension
            include_dirs=["src/runtime", "include", "src/gilfree/_core"],
            extra_compile_args=compile_args(),
            extra_link_args=link_args(),
        )
    ],
    cmdclass={"build_ext": build_ext, "build_py": build_py},
)
