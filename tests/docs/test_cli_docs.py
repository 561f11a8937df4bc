"""docs/cli.md is the real ``--help`` of every ``ldeq`` command (scripts/gen_cli_docs.py), whatever the terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gen_cli_docs.py"


def test_cli_reference_is_up_to_date() -> None:
    # a narrow, colourful terminal must not change the text: the script pins width, colour and formatter
    env = {**os.environ, "COLUMNS": "40", "FORCE_COLOR": "1", "TYPER_USE_RICH": "1"}
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, f"{res.stdout[-4000:]}\n{res.stderr[-1000:]}"


def test_cli_reference_covers_every_command() -> None:
    text = (REPO / "docs" / "cli.md").read_text()
    for cmd in ("ldeq train", "ldeq sweep", "ldeq evaluate", "ldeq serve", "ldeq data prepare", "ldeq data wflw-v"):
        assert f"## `{cmd}`" in text and f"Usage: {cmd} [OPTIONS]" in text
    assert "╭" not in text and "\x1b[" not in text  # no rich boxes, no colour codes
