"""ldeq_core depends only on torch, numpy, scipy and OpenCV."""

from __future__ import annotations

import subprocess
import sys


def test_core_imports_no_pipeline_stack() -> None:
    code = (
        "import sys, ldeq_core, ldeq_core.metrics, ldeq_core.filters, ldeq_core.layouts, ldeq_core.profiling\n"
        "heavy = ('ray', 'mlflow', 'dvc', 'pandas', 'pyarrow', 'fastapi', 'typer')\n"
        "bad = sorted(m for m in heavy if m in sys.modules)\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
