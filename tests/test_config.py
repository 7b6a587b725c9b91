"""Configuration: sources, precedence, transports, extra, UDS DEFAULT, error messages, names.

Everything goes through the real entry points: ``Application.configure(argv=..., environ=...)``
and ``ecosys.config.load_settings``; the process environment is never read (an explicit
``environ`` is always passed).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from ecosys import Application, ConfigurationError, HostPort, Settings
from ecosys.config import load_settings, to_snake_case

APP = "my_app"
INSTANCE = "blue"
DEFAULT_MAX_SIZE = 10 * 1024 * 1024


def configure(
    environ: dict[str, str] | None = None,
    argv: list[str] | None = None,
    code: dict[str, Any] | None = None,
    name: str = APP,
) -> Settings:
    """Configure a fresh Application of *name* as instance blue."""
    app = Application(name, config=code)
    return app.configure(argv=["-i", INSTANCE, *(argv or [])], environ=environ or {})


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def names(message: str, word: str) -> bool:
    """True when *word* appears in *message* as a whole name (ECOENV_X is not ECOENV_X_APP)."""
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(word)}(?![A-Za-z0-9_])", message) is not None


# ----- precedence ------------------------------------------------------------

# (level, log_max_size, log_level): each level is applied on top of all the ones before it.
LEVELS = [
    ("default", DEFAULT_MAX_SIZE, "INFO"),
    ("code", 2000, "DEBUG"),
    ("env machine", 3000, "WARNING"),
    ("env app", 4000, "ERROR"),
    ("env instance", 5000, "CRITICAL"),
    ("file", 6000, "DEBUG"),
    ("flags", 7000, "WARNING"),
]


def settings_up_to(level_count: int, tmp_path: Path) -> Settings:
    """Settings with the first *level_count* levels of LEVELS set (the default is always there)."""
    code: dict[str, Any] = {}
    environ: dict[str, str] = {}
    argv: list[str] = []
    active = [name for name, _, _ in LEVELS[:level_count]]
    values = {name: (size, level) for name, size, level in LEVELS}
    if "code" in active:
        size, level = values["code"]
        code = {"log_max_size": size, "log_level": level}
    if "env machine" in active:
        size, level = values["env machine"]
        environ["ECOENV_LOG_MAX_SIZE"] = str(size)
        environ["ECOENV_LOG_LEVEL"] = level
    if "env app" in active:
        size, level = values["env app"]
        environ["ECOENV_LOG_MAX_SIZE_MY_APP"] = str(size)
        environ["ECOENV_LOG_LEVEL_MY_APP"] = level
    if "env instance" in active:
        size, level = values["env instance"]
        environ["ECOENV_LOG_MAX_SIZE_MY_APP_BLUE"] = str(size)
        environ["ECOENV_LOG_LEVEL_MY_APP_BLUE"] = level
    if "file" in active:
        size, level = values["file"]
        path = write_json(tmp_path / "settings.json", {"log_max_size": size, "log_level": level.lower()})
        argv += ["-c", str(path)]
    if "flags" in active:
        size, level = values["flags"]
        argv += ["--log_max_size", str(size), "--log-level", level]
    return configure(environ, argv, code)


@pytest.mark.parametrize("level_count", range(1, len(LEVELS) + 1), ids=[name for name, _, _ in LEVELS])
def test_each_level_overrides_the_ones_below(level_count: int, tmp_path: Path) -> None:
    top, size, level = LEVELS[level_count - 1]
    cfg = settings_up_to(level_count, tmp_path)
    assert cfg.log_max_size == size, (
        f"with levels up to {top!r} set, log_max_size should come from {top!r} ({size}), got {cfg.log_max_size}"
    )
    assert cfg.log_level == level, (
        f"with levels up to {top!r} set, log_level should come from {top!r} ({level}), got {cfg.log_level}"
    )


def test_levels_override_per_key_not_wholesale(tmp_path: Path) -> None:
    environ = {
        "ECOENV_LOG_MAX_SIZE_MY_APP": "4096",     # app level, only for the size
        "ECOENV_LOG_LEVEL_MY_APP_BLUE": "ERROR",  # instance level, only for the level
        "ECOENV_LOG_BACKUPS": "7",                # machine level
    }
    cfg = configure(environ)
    assert (cfg.log_max_size, cfg.log_level, cfg.log_backups) == (4096, "ERROR", 7), (
        "each key must be taken from the highest level that sets it"
    )


def test_other_apps_and_instances_variables_are_ignored() -> None:
    environ = {
        "ECOENV_LOG_LEVEL_OTHER_APP": "DEBUG",
        "ECOENV_LOG_LEVEL_MY_APP_GREEN": "ERROR",
        "ECOENV_TCP_MY_APP_GREEN": "127.0.0.1:1234",
        "ECOENV_EXTRA_MY_APP_GREEN_KEY": "green",
    }
    cfg = configure(environ)
    assert cfg.log_level == "INFO", "another application's or instance's variable leaked in"
    assert cfg.tcp is None, "another instance's transport leaked in"
    assert cfg.extra == {}, "another instance's extra leaked in"


def test_load_settings_applies_the_same_precedence(tmp_path: Path) -> None:
    path = write_json(tmp_path / "c.json", {"stat_gp": 40})
    cfg = load_settings(
        APP, INSTANCE,
        code={"stat_gp": 10, "stat_hl": 1},
        environ={"ECOENV_STAT_GP": "20", "ECOENV_STAT_GP_MY_APP_BLUE": "30", "ECOENV_STAT_HL_MY_APP": "2"},
        config_file=path,
        flags={"stat_hl": "3"},
    )
    assert cfg.stat_gp == 40, "the -c file beats the environment"
    assert cfg.stat_hl == 3, "flags beat everything"


def test_directories_follow_default_dir_unless_set(tmp_path: Path) -> None:
    cfg = configure({"ECOENV_DEFAULT_DIR": str(tmp_path)})
    assert cfg.lock_path == tmp_path / "my_app-blue.lock"
    assert cfg.log_path == tmp_path / "my_app-blue.log"
    cfg = configure({
        "ECOENV_DEFAULT_DIR": str(tmp_path),
        "ECOENV_LOG_DIR_MY_APP": str(tmp_path / "logs"),
        "ECOENV_LOCK_DIR": str(tmp_path / "locks"),
    })
    assert cfg.log_path == tmp_path / "logs" / "my_app-blue.log"
    assert cfg.lock_path == tmp_path / "locks" / "my_app-blue.lock"


def test_boolean_flags_take_an_optional_value() -> None:
    cfg = configure({"ECOENV_LOG_CONSOLE": "true"}, ["--log_compress", "--log-console", "false"])
    assert cfg.log_compress is True, "--log_compress without a value means true"
    assert cfg.log_console is False, "--log-console false beats the environment"


# ----- transports --------------------------------------------------------------

def test_transports_come_only_from_the_instance_level() -> None:
    environ = {
        "ECOENV_TCP": "127.0.0.1:1111",
        "ECOENV_UDP": "127.0.0.1:1111",
        "ECOENV_UDS": "/tmp/machine.sock",
        "ECOENV_TCP_MY_APP": "127.0.0.1:2222",
        "ECOENV_UDP_MY_APP": "127.0.0.1:2222",
        "ECOENV_UDS_MY_APP": "/tmp/app.sock",
    }
    cfg = configure(environ)
    assert (cfg.tcp, cfg.udp, cfg.uds) == (None, None, None), (
        "machine- and application-level transport variables must be ignored"
    )
    environ.update({
        "ECOENV_TCP_MY_APP_BLUE": "127.0.0.1:3333",
        "ECOENV_UDP_MY_APP_BLUE": "[::1]:4444",
        "ECOENV_UDS_MY_APP_BLUE": "/tmp/instance.sock",
    })
    cfg = configure(environ)
    assert cfg.tcp == HostPort("127.0.0.1", 3333)
    assert cfg.udp == HostPort("::1", 4444)
    assert cfg.uds_path == Path("/tmp/instance.sock")


def test_transport_flags_beat_environment_and_file(tmp_path: Path) -> None:
    path = write_json(tmp_path / "c.json", {"tcp": "127.0.0.1:5555", "udp": "127.0.0.1:5556"})
    cfg = configure(
        {"ECOENV_TCP_MY_APP_BLUE": "127.0.0.1:3333", "ECOENV_UDP_MY_APP_BLUE": "127.0.0.1:3334"},
        ["-c", str(path), "--tcp", "0.0.0.0:7777"],
    )
    assert cfg.tcp == HostPort("0.0.0.0", 7777), "flag --tcp must win"
    assert cfg.udp == HostPort("127.0.0.1", 5556), "file udp must beat the environment"


def test_uds_default_alone_resolves_in_default_dir(tmp_path: Path) -> None:
    cfg = configure({"ECOENV_DEFAULT_DIR": str(tmp_path), "ECOENV_UDS_MY_APP_BLUE": "DEFAULT"})
    assert cfg.uds_path == tmp_path / "my_app_blue.uds.sock"
    cfg = configure({"ECOENV_DEFAULT_DIR": str(tmp_path)}, ["--uds", "DEFAULT"])
    assert cfg.uds_path == tmp_path / "my_app_blue.uds.sock"


def test_uds_default_basename_resolves_in_its_directory(tmp_path: Path) -> None:
    cfg = configure({"ECOENV_DEFAULT_DIR": str(tmp_path)}, ["--uds", "/some/dir/DEFAULT"])
    assert cfg.uds_path == Path("/some/dir/my_app_blue.uds.sock")
    cfg = configure({}, ["--uds", str(tmp_path / "custom.sock")])
    assert cfg.uds_path == tmp_path / "custom.sock", "a path with another basename is kept as is"


# ----- extra -------------------------------------------------------------------

def test_instance_extra_variables_land_in_config_extra(tmp_path: Path) -> None:
    environ = {
        "ECOENV_EXTRA_MY_APP_BLUE_B_PORT": "8123",
        "ECOENV_EXTRA_MY_APP_BLUE_GREETING": "hello world",
        "ECOENV_EXTRA_MY_APP_GREEN_B_PORT": "1",  # another instance
    }
    cfg = configure(environ)
    assert cfg.extra == {"B_PORT": "8123", "GREETING": "hello world"}


def test_extra_precedence_env_file_flags(tmp_path: Path) -> None:
    path = write_json(tmp_path / "c.json", {"extra": {"A": "file", "B": "file", "NUM": 3}})
    cfg = configure(
        {"ECOENV_EXTRA_MY_APP_BLUE_A": "env", "ECOENV_EXTRA_MY_APP_BLUE_C": "env"},
        ["-c", str(path), "--extra", "B=flag"],
        code={"extra": {"A": "code", "D": "code"}},
    )
    assert cfg.extra == {"A": "file", "B": "flag", "C": "env", "D": "code", "NUM": 3}


# ----- bad values ----------------------------------------------------------------

def test_bad_port_flag_names_the_flag() -> None:
    with pytest.raises(ConfigurationError) as info:
        configure({}, ["--tcp", "127.0.0.1:99999"])
    assert "--tcp" in str(info.value), f"message must name the flag: {info.value}"
    assert "99999" in str(info.value), f"message should show the bad value: {info.value}"


def test_bad_port_variable_names_the_variable() -> None:
    with pytest.raises(ConfigurationError) as info:
        configure({"ECOENV_TCP_MY_APP_BLUE": "127.0.0.1:abc"})
    assert names(str(info.value), "ECOENV_TCP_MY_APP_BLUE"), f"message must name the variable: {info.value}"


def test_bad_log_level_names_the_variable() -> None:
    with pytest.raises(ConfigurationError) as info:
        configure({"ECOENV_LOG_LEVEL": "LOUD"})
    assert names(str(info.value), "ECOENV_LOG_LEVEL"), f"message must name the variable: {info.value}"
    assert "LOUD" in str(info.value)


def test_bad_app_level_value_names_the_app_variable() -> None:
    with pytest.raises(ConfigurationError) as info:
        configure({"ECOENV_LOG_MAX_SIZE": "2048", "ECOENV_LOG_MAX_SIZE_MY_APP": "lots"})
    assert names(str(info.value), "ECOENV_LOG_MAX_SIZE_MY_APP"), (
        f"the message must name the variable that holds the bad value: {info.value}"
    )


def test_log_max_size_below_minimum_rejected() -> None:
    with pytest.raises(ConfigurationError) as info:
        configure({}, ["--log_max_size", "1000"])
    assert "--log_max_size" in str(info.value), f"message must name the flag: {info.value}"
    assert configure({}, ["--log_max_size", "1024"]).log_max_size == 1024, "1024 is allowed"


def test_bad_code_value_names_the_code_key() -> None:
    with pytest.raises(ConfigurationError) as info:
        configure(code={"log_backups": -1})
    assert "Application(config=...)" in str(info.value) and "log_backups" in str(info.value), str(info.value)
    with pytest.raises(ConfigurationError, match="bogus"):
        configure(code={"bogus": 1})


@pytest.mark.parametrize("bad_extra", ["text", ["a"], 5], ids=["str", "list", "int"])
def test_bad_code_extra_is_a_configuration_error(bad_extra: Any) -> None:
    with pytest.raises(ConfigurationError, match="extra"):
        configure(code={"extra": bad_extra})


def test_malformed_json_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"log_level": "DEBUG",', encoding="utf-8")
    with pytest.raises(ConfigurationError) as info:
        configure({}, ["-c", str(path)])
    assert str(path) in str(info.value), f"message must name the file: {info.value}"
    assert "JSON" in str(info.value), str(info.value)


def test_bad_value_in_file_names_file_and_key(tmp_path: Path) -> None:
    path = write_json(tmp_path / "c.json", {"log_level": "LOUD"})
    with pytest.raises(ConfigurationError) as info:
        configure({}, ["-c", str(path)])
    message = str(info.value)
    assert str(path) in message and "log_level" in message, f"message must name file and key: {message}"


def test_bad_port_in_file_names_the_key(tmp_path: Path) -> None:
    path = write_json(tmp_path / "c.json", {"udp": "127.0.0.1:-5"})
    with pytest.raises(ConfigurationError) as info:
        configure({}, ["-c", str(path)])
    assert "'udp'" in str(info.value) and str(path) in str(info.value), str(info.value)


def test_unknown_file_key_is_an_error(tmp_path: Path) -> None:
    path = write_json(tmp_path / "c.json", {"log_levle": "DEBUG"})
    with pytest.raises(ConfigurationError) as info:
        configure({}, ["-c", str(path)])
    assert "log_levle" in str(info.value), f"message must name the unknown key: {info.value}"


@pytest.mark.parametrize("content", ["[1, 2]", '"text"', "42"])
def test_file_must_hold_an_object(tmp_path: Path, content: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigurationError, match="object"):
        configure({}, ["-c", str(path)])


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.json"
    with pytest.raises(ConfigurationError) as info:
        configure({}, ["-c", str(path)])
    assert str(path) in str(info.value)


def test_no_file_is_loaded_unless_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    content = {"log_level": "DEBUG", "log_max_size": 4242, "extra": {"FOUND": "yes"}}
    for name in ("config.json", "ecosys.json", ".ecosys.json", "my_app.json", "my_app-blue.json",
                 "my_app_blue.json", "settings.json"):
        write_json(tmp_path / name, content)
    (tmp_path / "config").mkdir()
    write_json(tmp_path / "config" / "my_app.json", content)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = configure({"HOME": str(tmp_path)})
    assert (cfg.log_level, cfg.log_max_size, cfg.extra) == ("INFO", DEFAULT_MAX_SIZE, {}), (
        "a configuration file was loaded without -c"
    )
    cfg = configure({}, ["-c", "config.json"])
    assert cfg.log_max_size == 4242, "with -c the (relative) file is loaded"


# ----- names -----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("EchoServer", "echo_server"),
        ("echo-server", "echo_server"),
        ("echo server", "echo_server"),
        ("echo_server", "echo_server"),
        ("HTTPServer", "http_server"),
        ("Echo2Server", "echo2_server"),
    ],
)
def test_to_snake_case(text: str, expected: str) -> None:
    assert to_snake_case(text) == expected


@pytest.mark.parametrize("bad", ["EchoServer", "echo-server", "2fast", "", "echo server"])
def test_bad_application_name_rejected(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        Application(bad)


@pytest.mark.parametrize("bad", ["blue-1", "a b", "x.y", "ü"])
def test_bad_instance_rejected_from_flag(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="instance"):
        Application(APP).configure(argv=["-i", bad], environ={})


def test_empty_instance_rejected_with_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="instance"):
        Application(APP).configure(argv=["-i", ""], environ={})


def test_bad_instance_rejected_in_code() -> None:
    with pytest.raises(ConfigurationError, match="instance"):
        Application(APP, instance="no/slashes")


def test_instance_flag_beats_code_instance() -> None:
    app = Application(APP, instance="code1")
    assert app.configure(argv=[], environ={}).instance == "code1"
    assert app.configure(argv=["-i", "flag2"], environ={}).instance == "flag2"


def test_log_backups_zero_is_refused() -> None:
    # The rotating handler never rotates with zero backups: the log would grow without bound.
    with pytest.raises(ConfigurationError, match="ECOENV_LOG_BACKUPS"):
        Application(APP).configure(argv=["-i", "1"], environ={"ECOENV_LOG_BACKUPS": "0"})


def test_script_name_starting_with_digit_gets_valid_name(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setattr(sys, "argv", ["/x/2fast.py"])
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", None, raising=False)
    assert Application().name == "app_2fast"


@pytest.mark.parametrize("variable", ["ECOENV_LOG_DIR", "ECOENV_QUEUE_DIR", "ECOENV_DEFAULT_DIR",
                                      "ECOENV_UDS_MY_APP_BLUE"])
def test_an_empty_path_variable_is_refused_by_name(variable: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        configure({variable: ""})
    assert names(str(info.value), variable), f"message must name the variable: {info.value}"
    assert "empty path" in str(info.value)


@pytest.mark.parametrize("value", ["", " ", ","])
def test_an_empty_allowlist_is_refused_by_name(value: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        configure({"ECOENV_ALLOW": value})
    assert names(str(info.value), "ECOENV_ALLOW"), f"message must name the variable: {info.value}"
    assert "empty allowlist" in str(info.value)
    with pytest.raises(ConfigurationError, match="empty allowlist"):
        configure(code={"allow": []})
    assert configure({"ECOENV_ALLOW": "127.0.0.1, 10.0.0.0/8"}).allow == ["127.0.0.1/32", "10.0.0.0/8"]


def test_an_ipv6_address_needs_brackets() -> None:
    with pytest.raises(ConfigurationError) as info:
        configure({}, ["--tcp", "2001:db8::1"])
    assert "--tcp" in str(info.value) and "brackets" in str(info.value), str(info.value)
    assert configure({}, ["--tcp", "[::1]:8000"]).tcp == HostPort("::1", 8000)
    assert configure({}, ["--udp", "localhost:0"]).udp == HostPort("localhost", 0)


def test_a_file_that_is_not_utf8_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes('{"extra": {"city": "Orl\u00e9ans"}}'.encode("latin-1"))
    with pytest.raises(ConfigurationError) as info:
        configure({}, ["-c", str(path)])
    assert str(path) in str(info.value) and "UTF-8" in str(info.value), str(info.value)


def test_a_file_nested_too_deeply_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text('{"extra": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}}", encoding="utf-8")
    with pytest.raises(ConfigurationError) as info:
        configure({}, ["-c", str(path)])
    assert str(path) in str(info.value), str(info.value)


@pytest.mark.parametrize("value", ["inf", "nan", "-1"])
def test_shutdown_grace_must_be_finite_and_not_negative(value: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        configure({"ECOENV_SHUTDOWN_GRACE": value})
    assert names(str(info.value), "ECOENV_SHUTDOWN_GRACE"), str(info.value)
    assert configure({"ECOENV_SHUTDOWN_GRACE": "0.5"}).shutdown_grace == 0.5
