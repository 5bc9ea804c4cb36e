"""runtime/memory.py: a run's freed megabyte-sized blocks go back to the system (glibc), measured
on this process's own resident memory in a fresh interpreter."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent("""
    import sys
    from syncrunner.runtime.memory import return_freed_memory

    def rss_kb():
        return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS:")).split()[1])

    tuned = return_freed_memory()
    base = rss_kb()
    # a freed mmapped block raises glibc's default mmap and trim thresholds: the smaller blocks
    # after it then come from the heap and stay resident once freed
    for size in (6 << 20, 3 << 20, 2 << 20):
        block = bytearray(size)
        block[::4096] = b"x" * len(block[::4096])
        del block
    print(tuned, rss_kb() - base)
""")


def _probe(**env: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_run_returns_freed_blocks_and_the_operators_settings_win():
    tuned, held = _probe()
    assert tuned == "True" and held < 512, held
    theirs, held_theirs = _probe(MALLOC_ARENA_MAX="2")  # the operator's own setting: nothing changed
    assert theirs == "False" and held_theirs >= 2048, held_theirs  # glibc's defaults keep ~3 MB of it
