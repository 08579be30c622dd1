"""Where the container services of scripts/services.sh are, for the integration tests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def services_env() -> dict[str, str]:
    """DOCKER_HOST / CONTAINERS_CONF from the environment, else from services.sh."""
    env = {}
    if "DOCKER_HOST" not in os.environ or "CONTAINERS_CONF" not in os.environ:
        out = subprocess.run([str(REPO / "scripts" / "services.sh"), "env"], capture_output=True, text=True, check=False)
        for line in out.stdout.splitlines():
            k, _, v = line.removeprefix("export ").partition("=")
            env[k] = v
    env.update({k: os.environ[k] for k in ("DOCKER_HOST", "CONTAINERS_CONF") if k in os.environ})
    return env
