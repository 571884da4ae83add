"""Import cost of ``hubbub`` plus every built-in plugin, against the bare interpreter.

Runs each command several times in fresh interpreters and prints the median wall time, the
difference (hubbub's own cost) and the ratio. Also checks that heavy libraries stay unimported.
Target: hubbub + hubbub_plugins add under 300 ms.

    .venv/bin/python bench/import_time.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

HEAVY = ["litellm", "tiktoken", "litestar", "aiocache", "redis", "mcp", "authlib", "openai"]
BASELINE = "pass"
SUBJECT = (
    "import hubbub, hubbub.runtime\n"
    "from hubbub.plugins import load_plugins\n"
    "plugins = load_plugins()\n"
    "assert not plugins.failures, plugins.failures\n"
)
CHECK = SUBJECT + (
    f"import sys, json\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
)


def median_ms(code: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def self_reported_ms() -> float:
    """Cumulative import time of hubbub and the plugin modules, from ``-X importtime``."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", SUBJECT],
        check=True,
        capture_output=True,
        text=True,
    )
    total = 0
    for line in result.stderr.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[1].isdigit():
            name = parts[2]
            if name in ("hubbub", "hubbub.runtime") or name.startswith("hubbub_plugins."):
                total += int(parts[1])
    return total / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    subprocess.run([sys.executable, "-c", SUBJECT], check=True)  # warm the bytecode cache
    base = median_ms(BASELINE, args.runs)
    subject = median_ms(SUBJECT, args.runs)
    heavy = (
        subprocess.run([sys.executable, "-c", CHECK], check=True, capture_output=True, text=True)
        .stdout.strip()
        .splitlines()[-1]
    )
    print(f"import time, median of {args.runs} fresh interpreters")
    print(f"  baseline  python -c pass                    {base:8.1f} ms")
    print(f"  hubbub    import + load every built-in plugin {subject:6.1f} ms")
    print(f"  hubbub's own cost (difference)              {subject - base:8.1f} ms  (target < 300)")
    print(f"  ratio hubbub / baseline                     {subject / base:8.2f}x")
    print(f"  -X importtime cumulative (hubbub modules)   {self_reported_ms():8.1f} ms")
    print(f"  heavy modules imported: {heavy}")


if __name__ == "__main__":
    main()
