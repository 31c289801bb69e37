"""Test-session set-up: one on-disk XLA compilation cache for the whole run.

Most of the suite's time on a small CPU is XLA compiling tiny programs (a parameter
initialiser of a new shape alone takes ~0.5 s), and many tests compile the same ones: the
same initialisers, the same smoke-config train steps in the subprocess runs. JAX's
persistent cache lets every xdist worker and every subprocess (they inherit the
environment) reuse what another compiled. It lives in pytest's cache directory, so a
second run starts warm; ``make clean`` or ``pytest --cache-clear`` empties it. Compiled
programs are the same either way: the cache key covers the computation, the jax and XLA
versions and the compiler options.
"""

from __future__ import annotations

import os

import jax
import pytest

# Programs that compile faster than this are not worth a file (JAX's default is 1 s, which
# misses exactly the many small initialiser programs).
MIN_COMPILE_TIME_S = "0.2"


def pytest_configure(config: pytest.Config) -> None:
    if getattr(config, "cache", None) is None:  # -p no:cacheprovider: no cache dir
        return
    directory = str(config.cache.mkdir("jax-compilation-cache"))
    # Subprocesses (training CLI, sweeps, multi-process runs) read these at jax import;
    # a test that sets its own cache directory for a subprocess keeps it.
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", directory)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", MIN_COMPILE_TIME_S)
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update(
        "jax_persistent_cache_min_compile_time_secs",
        float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
    )
