"""The ``hubbub`` command, run as a real subprocess."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from support import run_cli, toml

import hubbub

BUILT_INS = {
    "memory_cache": "register_cache_backends",
    "sqlite_store": "register_account_stores, register_memory_stores",
    "offline_provider": "register_llm_providers",
    "log_sink": "register_event_sinks",
}


def test_plugins_lists_the_built_ins_with_their_hooks(tmp_path: Path) -> None:
    result = run_cli(["plugins"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for name, hook in BUILT_INS.items():
        header = f"{name} {hubbub.__version__} (built-in)"
        assert header in lines
        block = lines[lines.index(header) + 1 : lines.index(header) + 3]
        assert f"  hooks: {hook}" in block[0]


def test_plugins_json(tmp_path: Path) -> None:
    result = run_cli(["plugins", "--json"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    for name, hook in BUILT_INS.items():
        row = rows[name]
        assert row["source"] == "built-in"
        assert row["distribution"] == "hubbub"
        assert row["version"] == hubbub.__version__
        assert set(hook.split(", ")) <= set(row["hooks"])
        assert row["error"] is None
    assert rows["sqlite_store"]["provides"] == ["memory:sqlite", "accounts:sqlite"]
    assert rows["offline_provider"]["provides"] == ["llm:offline"]


def test_plugins_respects_hubbub_load_plugins(tmp_path: Path) -> None:
    result = run_cli(["plugins", "--json"], cwd=tmp_path, env={"HUBBUB_LOAD_PLUGINS": "log_sink"})
    assert result.returncode == 0, result.stderr
    assert [row["name"] for row in json.loads(result.stdout)] == ["log_sink"]


def test_plugins_respects_disabled_in_config(tmp_path: Path) -> None:
    (tmp_path / "hubbub.toml").write_text('[plugins]\ndisabled = ["sqlite_store"]\n')
    result = run_cli(["plugins", "--json"], cwd=tmp_path)
    names = {row["name"] for row in json.loads(result.stdout)}
    assert "sqlite_store" not in names
    assert "memory_cache" in names


def test_config_check_accepts_a_valid_file(tmp_path: Path) -> None:
    (tmp_path / "hubbub.toml").write_text(toml('[cache]\nbackend = "memory"\n'))
    result = run_cli(["config", "check"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok: hubbub.toml is valid"


def test_config_check_misspelled_key_is_one_line_with_path_and_line(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "my.toml"
    config.parent.mkdir()
    config.write_text('[server]\nport = 8000\n\n[cache]\nbackend = "memory"\nfallbak = "memory"\n')
    result = run_cli(["config", "check", "--config", str(config)], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {config}:6: cache.fallbak: unknown key")
    assert "did you mean 'fallback'" in lines[0]


def test_config_check_unregistered_backend(tmp_path: Path) -> None:
    (tmp_path / "hubbub.toml").write_text(toml('[cache]\nfallback = "memroy"\n'))
    result = run_cli(["config", "check"], cwd=tmp_path)
    assert result.returncode == 2
    # Other cache backends may be installed: the list holds at least the built-in one.
    assert re.fullmatch(
        r"error: hubbub\.toml:4: cache\.fallback: expected one of ('[a-z_]+', )*'memory'"
        r"(, '[a-z_]+')*, got 'memroy' \(did you mean 'memory'\?\)",
        result.stderr.strip(),
    )


def test_config_check_reports_every_problem_one_per_line(tmp_path: Path) -> None:
    (tmp_path / "hubbub.toml").write_text(
        toml('[memory]\nbackend = "mongodb"\n[events]\nsinks = ["kafka"]\n')
    )
    result = run_cli(["config", "check"], cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    assert any("events.sinks[0]" in line for line in lines)
    assert any("memory.backend" in line for line in lines)


def test_config_check_environment_error_names_the_variable(tmp_path: Path) -> None:
    (tmp_path / "hubbub.toml").write_text(toml(""))
    result = run_cli(["config", "check"], cwd=tmp_path, env={"HUBBUB_SERVER__PORT": "high"})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: environment variable HUBBUB_SERVER__PORT: server.port: expected 'int', got 'str'"
    )


def test_config_check_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[cache\n")
    result = run_cli(["config", "check", "--config", "bad.toml"], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: bad.toml: not valid TOML")
    result = run_cli(["config", "check", "--config", "missing.toml"], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: missing.toml: cannot read: No such file or directory"


def test_config_file_from_hubbub_config(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.toml"
    elsewhere.write_text(toml("[logging]\nlevel = 'QUIET'\n"))
    result = run_cli(["config", "check"], cwd=tmp_path, env={"HUBBUB_CONFIG": str(elsewhere)})
    assert result.returncode == 2
    assert f"{elsewhere}:4: logging.level" in result.stderr


def test_config_show_redacts_secrets(acme_site: Path, tmp_path: Path) -> None:
    (tmp_path / "hubbub.toml").write_text(
        toml(
            """
            [cache]
            backend = "acme"
            [plugins.acme]
            api_key = { env = "ACME_KEY" }
            """
        )
    )
    env = {"ACME_KEY": "hunter2-very-secret", "HUBBUB_SERVER__PORT": "9999"}
    shown = run_cli(["config", "show"], cwd=tmp_path, env=env, pythonpath=acme_site)
    assert shown.returncode == 0, shown.stderr
    assert "hunter2" not in shown.stdout
    data = tomllib.loads(shown.stdout)
    assert data["plugins"]["acme"]["api_key"] == "********"
    assert data["plugins"]["acme"]["prefix"] == "acme:"  # decoded: defaults filled in
    assert data["cache"]["backend"] == "acme"
    assert data["server"]["port"] == 9999

    as_json = run_cli(["config", "show", "--json"], cwd=tmp_path, env=env, pythonpath=acme_site)
    assert as_json.returncode == 0, as_json.stderr
    assert "hunter2" not in as_json.stdout
    assert json.loads(as_json.stdout)["plugins"]["acme"]["api_key"] == "********"


def test_config_show_redacts_secret_looking_values_of_undeclared_tables(tmp_path: Path) -> None:
    (tmp_path / "hubbub.toml").write_text(toml("[plugins.sqlite_store]\nbusy_timeout = 2.0\n"))
    shown = run_cli(["config", "show", "--json"], cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["plugins"]["sqlite_store"] == {
        "path": None,
        "busy_timeout": 2.0,
        "health_interval": 5.0,
        "accounts_path": None,
    }


def test_config_init_writes_a_file_config_check_accepts(tmp_path: Path) -> None:
    result = run_cli(["config", "init", "example.toml"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = (tmp_path / "example.toml").read_text()
    data = tomllib.loads(written)
    for section in ("server", "runtime", "events", "cache", "memory", "auth", "llm", "tools"):
        assert section in data or f"[{section}]" in written
    assert written.count("#") > 10  # commented
    checked = run_cli(["config", "check", "--config", "example.toml"], cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr

    again = run_cli(["config", "init", "example.toml"], cwd=tmp_path)
    assert again.returncode == 2
    assert "exists" in again.stderr
    forced = run_cli(["config", "init", "example.toml", "--force"], cwd=tmp_path)
    assert forced.returncode == 0


def test_version(tmp_path: Path) -> None:
    result = run_cli(["version"], cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == f"hubbub {hubbub.__version__}"
    assert "python 3." in result.stdout
    flag = run_cli(["--version"], cwd=tmp_path)
    assert flag.stdout.strip() == f"hubbub {hubbub.__version__}"


def test_unknown_command_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli(["frobnicate"], cwd=tmp_path)
    assert result.returncode == 2
    assert "No such command 'frobnicate'" in result.stderr


def test_config_init_covers_every_plugins_settings_commented_out(tmp_path: Path) -> None:
    """Every installed plugin's table is there, commented out; uncommented it is valid."""
    assert run_cli(["config", "init", "hubbub.toml"], cwd=tmp_path).returncode == 0
    target = tmp_path / "hubbub.toml"
    text = target.read_text()
    tables = ["offline_provider", "sqlite_store", "memory_cache", "log_sink", "api_keys"]
    for table in [*tables, "litellm_provider"]:
        assert f"# [plugins.{table}]" in text, table
    uncommented = text.replace("# [plugins.offline_provider]", "[plugins.offline_provider]")
    target.write_text(uncommented.replace("# token_delay = 0.0", "token_delay = 0.25"))
    done = run_cli(["config", "show", "--json"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["plugins"]["offline_provider"] == {"token_delay": 0.25}


# -- serve --workers: refused without a shared event log and cache ---------------------------


def test_serve_workers_without_shared_backends_is_one_line_naming_the_settings(
    tmp_path: Path,
) -> None:
    result = run_cli(["serve", "--workers", "2", "--port", "1"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        'error: --workers 2 needs a shared event log and cache: set [events] backend = "redis" '
        'and [cache] backend = "redis" with [redis] url'
    ]
    assert result.stdout == ""


def test_serve_workers_from_the_file_names_its_line_and_only_what_is_missing(
    tmp_path: Path,
) -> None:
    (tmp_path / "hubbub.toml").write_text(
        toml(
            '[server]\nworkers = 3\n[redis]\nurl = "redis://127.0.0.1:1/0"\n'
            '[events]\nbackend = "redis"\n'
        )
    )
    result = run_cli(["serve"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "error: hubbub.toml:4: server.workers: 3 workers need a shared cache: set [cache] "
        'backend = "redis"'
    ]


def test_config_check_refuses_workers_without_shared_backends(tmp_path: Path) -> None:
    (tmp_path / "hubbub.toml").write_text(toml("[server]\nworkers = 2\n"))
    result = run_cli(["config", "check"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "server.workers: 2 workers need a shared event log and cache" in result.stderr


def test_serve_workers_refuse_a_cache_that_falls_back_to_memory(tmp_path: Path) -> None:
    (tmp_path / "hubbub.toml").write_text(
        toml(
            '[server]\nworkers = 2\n[redis]\nurl = "redis://127.0.0.1:1/0"\n'
            '[events]\nbackend = "redis"\n[cache]\nbackend = "redis"\nfallback = "memory"\n'
        )
    )
    result = run_cli(["serve"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "cache.fallback: 2 workers cannot use [cache] fallback" in result.stderr
    assert "remove the fallback" in result.stderr
