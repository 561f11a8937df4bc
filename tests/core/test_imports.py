"""ldeq_core depends only on torch, numpy, scipy and OpenCV; the shared data helpers add no pipeline stack.

The static check of which of our packages may import which is ``tests/test_import_direction.py``; these tests run
the imports in a fresh interpreter and look at what actually got loaded.
"""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("ray", "mlflow", "dvc", "pandas", "pyarrow", "fastapi", "typer")


def _loaded_after(imports: str, watch: tuple[str, ...]) -> list[str]:
    code = f"import sys\n{imports}\nprint(','.join(sorted(m for m in {watch!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_core_imports_no_pipeline_stack() -> None:
    imports = (
        "import ldeq_core, ldeq_core.metrics, ldeq_core.filters, ldeq_core.layouts, ldeq_core.profiling, "
        "ldeq_core.fileio, ldeq_core.checkpoints"
    )
    assert _loaded_after(imports, (*HEAVY, "ldeq_shared", "pipelines", "serve", "ldeq_cli")) == []


def test_shared_data_modules_import_no_pipeline_stack() -> None:
    """The service and the CLI use these without the training stack (Ray is imported only when a session starts)."""
    imports = (
        "import ldeq_shared.errors, ldeq_shared.video_io, ldeq_shared.wflw_v, ldeq_shared.prepared, "
        "ldeq_shared.ray_session, ldeq_shared.net"
    )
    assert _loaded_after(imports, (*HEAVY, "pipelines", "serve", "ldeq_cli")) == []
