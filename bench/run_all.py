"""Run every benchmark in this folder, one after another: ``make bench``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent

if __name__ == "__main__":
    failed = False
    for script in sorted(HERE.glob("*.py")):
        if script.name == Path(__file__).name or script.name.startswith("_"):
            continue  # modules the benchmarks import
        sys.stdout.write(f"\n== {script.name}\n")
        sys.stdout.flush()
        failed |= subprocess.run([sys.executable, str(script)]).returncode != 0
    sys.exit(1 if failed else 0)
