"""avis.runtime: the CLI turns PyTorch's huge-page allocations on before a handler runs."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from avis.runtime import HUGE_PAGES_ENV, enable_huge_page_allocations

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
