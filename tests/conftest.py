"""Test-session settings.

A persistent XLA compilation cache shared by every test and every subprocess the tests start: many tests build the
same compiled programs (the CLI in-process and in a subprocess, a run and its resumption), and compiling, not
running, dominates this suite's time on a 2-core CPU.
"""

import os
import tempfile

# Cheaper code generation: compiling, not running, dominates nearly every test on a 2-core CPU, and XLA's backend
# optimisation level 0 halves compile time (tests/test_train.py: 231 s -> 107 s) for programs that run about 2x
# slower. Every test process, including the CLI subprocesses the tests start, compiles with the same flags, so
# results stay comparable inside the suite (same-seed and resume-equivalence tests compare like with like).
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_llvm_disable_expensive_passes=true"
                           " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402

_CACHE = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="ppocma_jax_xla_cache_"))
os.environ["PPOCMA_JAX_COMPILE_CACHE"] = _CACHE  # the CLI's setting (compile_cache.py): in-process and subprocesses
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
