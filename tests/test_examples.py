"""The example scripts under examples/ run (the Python API they show still exists)."""

import runpy
import sys
from pathlib import Path

from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_predict_and_draw_on_the_demo_clip(tmp_path, monkeypatch, capsys):
    out = tmp_path / "sheet.png"
    monkeypatch.setattr(sys, "argv", ["predict_and_draw.py", "--out", str(out)])
    runpy.run_path(str(EXAMPLES / "predict_and_draw.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert "#1 " in printed and "sounds" in printed and f"wrote {out}" in printed
    with Image.open(out) as sheet:
        assert sheet.width > 0 and sheet.height > 0
