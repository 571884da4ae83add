"""Issue 19's benchmarks run, in their quick mode: bench/llm.py whole, bench/gateway.py with
the bare forwarder and hubbub's native provider in front of the canned upstream (all four rows
take longer than a smoke test should). Figures are not judged here (the machine is noisy): the
runs must finish, check every reply and print each figure."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


def run(script: str, *args: str, timeout: float = 120) -> str:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.timeout(180)
def test_llm_bench_quick_prints_every_figure() -> None:
    out = run("llm.py", "--quick")
    assert re.search(r"^  no middleware +\d+\.\d+ ms/call", out, re.M), out
    assert re.search(r"^  budgets, memory ledger +\d+\.\d+ ms/call .* target < 0\.5 ms", out, re.M)
    for encoding in ("cl100k_base", "o200k_base"):
        for label in ("chat-sized", "document"):
            line = rf"^  {encoding} +{label} +[\d,]+ tokens/s"
            assert re.search(line, out, re.M), out


@pytest.mark.timeout(180)
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make wrk)")
def test_gateway_bench_quick_measures_the_fast_path_against_the_bare_forwarder(
    tmp_path: Path,
) -> None:
    figures = tmp_path / "gateway.json"
    out = run("gateway.py", "--quick", "--rows", "bare,hubbub", "--json", str(figures))
    medians = json.loads(figures.read_text())["medians"]
    expected = {f"{row} {mode} c{c}" for row in ("bare", "hubbub") for mode in ("json", "sse")
                for c in (1, 32)}  # fmt: skip
    assert set(medians) == expected
    assert all(sample["rps"] > 0 and sample["p50"] > 0 for sample in medians.values())
    for mode in ("json", "sse"):
        assert re.search(rf"(PASS|FAIL) +hubbub {mode}: req/s at -c 32 >= 60% of bare", out)
        assert re.search(rf"(PASS|FAIL) +hubbub {mode}: p50 added at -c 1 <= 0\.3 ms", out)
    assert "client, upstream and servers share it" in out


@pytest.mark.timeout(120)
def test_tools_bench_quick_prints_every_figure(tmp_path: Path) -> None:
    """Issue 20's bench/tools.py whole: every row measured (none "not available"), each beside
    its group's baseline, the machine line printed, the medians written with --json."""
    figures = tmp_path / "tools.json"
    out = run("tools.py", "--quick", "--json", str(figures), timeout=90)
    assert "not available" not in out, out
    number = r"-?\d+\.\d+"
    rows = {
        "local": ["registry, no middleware", "registry, 1 pass-through middleware",
                  "+ events, no storage", "conversation path (events, sqlite)"],
        "reply": ["offline/tools reply, 1 tool call"],
        "stdio": ["hubbub McpTool.call", "hubbub registry (ToolSet.call)"],
        "http": ["hubbub McpTool.call", "hubbub registry (ToolSet.call)"],
    }  # fmt: skip
    baselines = {"local": "direct function call", "reply": "offline/echo reply"}
    if (Path(sys.executable).with_name("mcp-server-time")).exists():
        rows["time"] = ["hubbub registry (ToolSet.call)"]
    medians = json.loads(figures.read_text())["medians"]
    for group, names in rows.items():
        baseline = baselines.get(group, "mcp ClientSession (direct)")
        assert medians[f"{group}: {baseline}"]["ms"] > 0
        assert re.search(rf"^  {re.escape(baseline)} +{number} ms/call", out, re.M), out
        for name in names:
            line = rf"^  {re.escape(name)} +{number} ms/call .* added [+-]{number} ms, ratio"
            assert re.search(line, out, re.M), (name, out)
            figure = medians[f"{group}: {name}"]
            assert figure["ms"] > 0
            base = medians[f"{group}: {baseline}"]["ms"]
            assert figure["ratio"] == pytest.approx(figure["ms"] / base)
    assert len(medians) == len(rows) + sum(len(names) for names in rows.values())
    assert f"{os.cpu_count()}-core machine: the client and the MCP servers share it" in out
