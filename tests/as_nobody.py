"""Running test code as an unprivileged user (uid 65534) from a root test run, as the sandbox's
non-root path must be checked for real: ``setpriv`` and an interpreter that user can start."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

NOBODY = 65534
SETPRIV = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def interpreter_for_nobody() -> str | None:
    """A Python that uid 65534 can run (and that can start itself, as the sandbox does); None when
    this run is not root or has no setpriv."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return None
    probe = "import subprocess, sys\nsubprocess.run([sys.executable, '-I', '-c', 'pass'], check=True)"  # as the sandbox starts it
    for candidate in (sys.executable, shutil.which("python3"), "/usr/bin/python3"):
        if candidate and subprocess.run([*SETPRIV, candidate, "-I", "-c", probe], capture_output=True).returncode == 0:
            return candidate
    return None
