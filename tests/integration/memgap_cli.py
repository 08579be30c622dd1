"""memgap as the integration tests start it: a child process whose JSON output is read, and
that is interrupted (Ctrl-C, never SIGKILL first) when the test times out or is stopped, so
memgap removes its containers, mounts and cgroups before it exits; and a study's rows."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

MEMGAP = [sys.executable, "-m", "memgap"]


def run_memgap(args: list[str], env: dict[str, str] | None = None, timeout_s: float = 600) -> tuple[int, Any, str]:
    """(exit status, stdout read as JSON or None when it is not JSON, stderr)."""
    p = subprocess.Popen([*MEMGAP, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, **(env or {})})
    try:
        stdout, stderr = p.communicate(timeout=timeout_s)
    except BaseException:
        p.send_signal(signal.SIGINT)  # memgap removes what it made before it exits
        try:
            p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        raise
    try:
        out = json.loads(stdout) if stdout.strip() else None
    except json.JSONDecodeError:
        out = None
    return p.returncode, out, stderr


def study_rows(db: Path) -> list[tuple[int, int, str]]:
    """The study's bookkeeping (plan index, attempt, status); [] while the store is not there yet."""
    try:
        con = sqlite3.connect(db, timeout=5)
        try:
            return con.execute("SELECT plan_index, attempt, status FROM study_runs ORDER BY plan_index, attempt").fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return []
