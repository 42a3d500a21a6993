"""avis.runtime: the CLI turns PyTorch's huge-page allocations on before a handler runs."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from avis.runtime import HUGE_PAGES_ENV, MALLOC_ENV, enable_huge_page_allocations

THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def test_enable_sets_the_variable_unless_the_user_did(monkeypatch):
    monkeypatch.delenv(HUGE_PAGES_ENV, raising=False)
    assert enable_huge_page_allocations() is True
    assert os.environ[HUGE_PAGES_ENV] == "1"
    monkeypatch.setenv(HUGE_PAGES_ENV, "0")
    assert enable_huge_page_allocations() is False
    assert os.environ[HUGE_PAGES_ENV] == "0"


PROBE = '''
import torch

def register(subparsers):
    p = subparsers.add_parser("probe")
    p.set_defaults(func=run)

def run(args):
    x = torch.ones(64 * 2**20 // 4)  # a fresh 64 MB tensor
    text = open("/proc/self/smaps_rollup").read()
    print("HUGE_KB", int(text.split("AnonHugePages:")[1].split()[0]), float(x.sum()))
    return 0
'''


def _huge_kb(tmp_path: Path, env_value: str | None) -> int:
    (tmp_path / "probe_cmd.py").write_text(textwrap.dedent(PROBE))
    code = (
        "import sys; from avis.cli import main as m; "
        "m.SUBCOMMAND_MODULES = ('probe_cmd',); sys.exit(m.main(['probe']))"
    )
    env = {k: v for k, v in os.environ.items() if k != HUGE_PAGES_ENV}
    if env_value is not None:
        env[HUGE_PAGES_ENV] = env_value
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    return int(out.split("HUGE_KB")[1].split()[0])


@pytest.mark.skipif(
    not THP_MODE.exists() or "[madvise]" not in THP_MODE.read_text(),
    reason="needs a Linux kernel whose transparent-huge-page mode is madvise",
)
def test_cli_handlers_get_huge_pages_and_the_user_can_refuse(tmp_path):
    assert _huge_kb(tmp_path, None) >= 32 * 1024  # most of the 64 MB tensor in 2 MB pages
    assert _huge_kb(tmp_path, "0") < 8 * 1024


HEAP_PROBE = """
import sys, torch
from avis.runtime import keep_freed_heap_memory

def heap_kb():  # the heap may be split into several mappings (huge-page advice)
    total = 0
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith("[heap]"):
            start, end = (int(v, 16) for v in line.split()[0].split("-"))
            total += (end - start) // 1024
    return total

applied = keep_freed_heap_memory()
before = heap_kb()
x = torch.ones(24 * 2**20 // 4)  # a fresh 24 MB tensor
grown = heap_kb() - before
del x
kept = heap_kb() - before
print("RESULT", applied, grown, kept, float(torch.ones(3).sum()))
"""


def _heap_probe(env_extra: dict[str, str]) -> tuple[bool, int, int]:
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}
    env.update(env_extra)
    out = subprocess.run(
        [sys.executable, "-c", HEAP_PROBE], env=env, capture_output=True, text=True, check=True
    ).stdout
    applied, grown, kept = out.split("RESULT")[1].split()[:3]
    return applied == "True", int(grown), int(kept)


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"),
    reason="glibc's malloc only",
)
def test_freed_tensors_stay_in_the_heap_unless_the_user_set_malloc():
    """With the setting a 24 MB tensor comes from the heap and its memory stays there after
    it is freed (to be reused without page faults); glibc's default maps it separately
    (mmap) and unmaps it on free. A user's MALLOC_* / GLIBC_TUNABLES choice wins."""
    applied, grown, kept = _heap_probe({})
    assert applied
    assert grown >= 20 * 1024 and kept >= 20 * 1024  # (the heap may have had some room)
    applied, grown, kept = _heap_probe({"GLIBC_TUNABLES": "glibc.malloc.perturb=0"})
    assert not applied
    assert grown < 4 * 1024 and kept < 4 * 1024
