"""Settings (openkvs/config.py): defaults, the environment, flags, checks, and the CLI derived from one declaration."""

from __future__ import annotations

import os
from typing import Any

import click
import pytest
from click.testing import CliRunner

from openkvs import cli
from openkvs.config import GIB, SETTINGS, Settings


def load(**environ: str) -> Settings:
    return Settings.load(environ=environ)


def test_no_variables_give_the_declared_defaults() -> None:
    s = load()
    assert s == Settings()
    assert (s.host, s.port, s.data_dir, s.workers, s.max_record_bytes, s.fsync) == ("127.0.0.1", 8000, "./data", 1,
                                                                                      GIB, False)
    assert (s.rate_limits, s.default_general_access, s.log_level) == ("on", "RESTRICTED", "info")


def test_variables_are_read_with_the_settings_types() -> None:
    s = load(OPENKVS_PORT="9001", OPENKVS_FSYNC="true", OPENKVS_MAX_RECORD_BYTES="0", OPENKVS_RATE_LIMITS="off",
             OPENKVS_DEFAULT_GENERAL_ACCESS="ANYONE_WITH_NAME_CAN_READ", OPENKVS_TRUSTED_PROXIES="10.0.0.0/8, ::1")
    assert (s.port, s.fsync, s.max_record_bytes, s.rate_limits) == (9001, True, 0, "off")
    assert s.default_general_access == "ANYONE_WITH_NAME_CAN_READ"
    assert [str(n) for n in s.trusted_networks] == ["10.0.0.0/8", "::1/128"]


@pytest.mark.parametrize("text, value", [("1", True), ("TRUE", True), ("yes", True), ("on", True), ("0", False),
                                         ("false", False), ("No", False), ("off", False), ("", False)])
def test_a_boolean_variable(text: str, value: bool) -> None:
    assert load(OPENKVS_FSYNC=text).fsync is value


def test_a_flag_wins_over_its_variable_and_none_means_not_given() -> None:
    environ = {"OPENKVS_PORT": "7000", "OPENKVS_HOST": "0.0.0.0"}
    s = Settings.load({"port": 7001, "host": None}, environ)
    assert (s.port, s.host) == (7001, "0.0.0.0")
    assert Settings.load({"port": "7002"}, environ).port == 7002  # text, as from a flag, is parsed too


@pytest.mark.parametrize("environ, named", [
    ({"OPENKVS_PORT": "eighty"}, "OPENKVS_PORT: expected an integer"),
    ({"OPENKVS_FSYNC": "maybe"}, "OPENKVS_FSYNC: expected true or false"),
    ({"OPENKVS_RATE_LIMITS": "sometimes"}, "OPENKVS_RATE_LIMITS: expected one of on, off"),
    ({"OPENKVS_DEFAULT_GENERAL_ACCESS": "FOLLOW_USER_SETTING"}, "OPENKVS_DEFAULT_GENERAL_ACCESS: expected one of"),
    ({"OPENKVS_WORKERS": "0"}, "OPENKVS_WORKERS: must be at least 1"),
    ({"OPENKVS_LOG_LEVEL": "foo"}, "OPENKVS_LOG_LEVEL: expected one of trace, debug"),
    ({"OPENKVS_MAX_RECORD_BYTES": "-1"}, "OPENKVS_MAX_RECORD_BYTES: must be at least 0"),
    ({"OPENKVS_TRUSTED_PROXIES": "10.0.0.300"}, "OPENKVS_TRUSTED_PROXIES: "),
    ({"OPENKVS_RATE_LIMIT_STORE_PER_SECOND": "0"}, "rate limits must allow at least"),
    ({"OPENKVS_RATE_LIMIT_USER_PER_MINUTE": "59"}, "rate limits must allow at least"),
])
def test_a_bad_value_is_refused_naming_where_it_came_from(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Settings.load(environ=environ)


def test_log_levels_are_taken_in_any_case() -> None:
    assert Settings.load(environ={"OPENKVS_LOG_LEVEL": "WARNING"}).log_level == "WARNING"


def test_a_bad_flag_is_refused_naming_the_flag() -> None:
    with pytest.raises(ValueError, match="--workers: must be at least 1"):
        Settings.load({"workers": 0}, {})


def test_rate_limits_off_allow_any_budget() -> None:
    s = load(OPENKVS_RATE_LIMITS="off", OPENKVS_RATE_LIMIT_STORE_PER_SECOND="0")
    assert s.rate_limit_store_per_second == 0


def test_validate_checks_settings_made_in_code() -> None:
    with pytest.raises(ValueError, match="--rate-limits"):
        Settings(rate_limits="sometimes").validate()
    Settings().replace(port=1).validate()


def test_every_value_survives_the_trip_through_its_variable() -> None:
    """serve hands its settings to worker processes as variables: each must read back as it was."""
    changed = Settings(fsync=True, port=8123, public_url="https://kv.example", trusted_proxies="10.0.0.0/8")
    for settings in (Settings(), changed):
        environ = {s.env: s.format(getattr(settings, s.name)) for s in SETTINGS}
        assert Settings.load(environ=environ) == settings


def test_secrets_stay_out_of_repr() -> None:
    text = repr(Settings(database_url="postgresql://u:hunter2@db/x", redis_url="redis://:hunter3@r/0"))
    assert "hunter2" not in text and "hunter3" not in text


# -- the CLI, derived from the declaration -------------------------------------------------------------------------


def test_serve_has_one_option_per_setting_reading_its_variable() -> None:
    options = {p.name: p for p in cli.main.commands["serve"].params if isinstance(p, click.Option)}
    assert list(options) == [s.name for s in SETTINGS]
    for s in SETTINGS:
        assert options[s.name].opts == [s.flag] and options[s.name].envvar == s.env


def test_storage_commands_take_the_storage_settings() -> None:
    for name in ("migrate",):
        flags = {o for p in cli.main.commands[name].params for o in p.opts}
        # where the data is: the database, and the bucket that may hold record bytes (--blob-store)
        assert flags == {
            "--data-dir", "--database-url", "--database-schema",
            "--blob-store", "--s3-endpoint", "--s3-region", "--s3-path-style", "--blob-inline-max",
        }


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """``openkvs serve`` without a server: what it would run uvicorn with, and the variables it hands down."""
    seen: dict[str, Any] = {}
    for s in SETTINGS:
        monkeypatch.delenv(s.env, raising=False)
    monkeypatch.setattr(cli, "_run", lambda settings, work: None)

    def run(config: Any) -> None:
        # OPENKVS_TEST_*: the suite's own variables (.ci/run sets them), not the server's
        handed = {k: v for k, v in os.environ.items() if k.startswith("OPENKVS_") and not k.startswith("OPENKVS_TEST_")}
        seen.update(port=config.port, environ=handed)

    monkeypatch.setattr("openkvs.shutdown.run", run)
    return seen


def serve(*args: str, **environ: str) -> click.testing.Result:
    return CliRunner().invoke(cli.main, ["serve", *args], env=environ)


def test_serve_reads_flags_over_variables_and_hands_all_down(served: dict[str, Any]) -> None:
    result = serve("--port", "9002", "--no-fsync", OPENKVS_PORT="9001", OPENKVS_FSYNC="true",
                   OPENKVS_MAX_RECORD_BYTES="5")
    assert result.exit_code == 0, result.output
    assert served["port"] == 9002
    workers_see = Settings.load(environ=served["environ"])
    assert (workers_see.port, workers_see.fsync, workers_see.max_record_bytes) == (9002, False, 5)
    assert set(served["environ"]) == {s.env for s in SETTINGS}


@pytest.mark.parametrize("args, environ, message", [
    (("--port", "eighty"), {}, "Invalid value for '--port'"),
    ((), {"OPENKVS_WORKERS": "0"}, "OPENKVS_WORKERS"),
    (("--rate-limits", "sometimes"), {}, "expected one of on, off"),
    (("--log-level", "foo"), {}, "expected one of trace, debug, info"),
    (("--rate-limit-store-per-second", "0"), {}, "rate limits must allow at least"),
    (("--workers", "2"), {}, "--redis-url"),
])
def test_serve_refuses_bad_settings_before_starting(served: dict[str, Any], args: tuple[str, ...],
                                                    environ: dict[str, str], message: str) -> None:
    result = serve(*args, **environ)
    assert result.exit_code == 2 and message in result.output, result.output
    assert "port" not in served  # uvicorn never ran


def test_settings_command_lists_every_setting_and_points_nowhere_unfindable() -> None:
    out = CliRunner().invoke(cli.main, ["settings"]).output
    for s in SETTINGS:
        assert s.flag in out and s.env in out
    assert "section" not in out  # it once sent users to "section 7 of the API contract"
