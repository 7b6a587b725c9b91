"""Application settings and where they come from.

Precedence, lowest to highest: built-in defaults, values set in code,
environment (machine ``ECOENV_X``, application ``ECOENV_X_<APP>``, instance
``ECOENV_X_<APP>_<INSTANCE>``), the JSON file given with ``-c``, command-line
flags. Every value remembers where it came from, so a bad one is reported by
the name of its variable, file key or flag.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from .errors import ConfigurationError
from .protocol import DEFAULT_MAX_MESSAGE_SIZE

ENV_PREFIX = "ECOENV_"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
INSTANCE_PATTERN = re.compile(r"^[A-Za-z0-9_]+$")
TRANSPORTS = ("tcp", "udp", "uds")


@dataclass(frozen=True, slots=True)
class HostPort:
    """A host and port to listen on."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_host_port(value: Any) -> Any:
    """Accept ``host:port`` (IPv6 as ``[::1]:port``) or a HostPort."""
    if isinstance(value, HostPort):
        return value
    if not isinstance(value, str):
        raise ValueError("expected 'host:port'")
    host, sep, port_text = value.strip().rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    if not sep or not host:
        raise ValueError(f"expected 'host:port', got {value!r}")
    if ":" in host and not bracketed:
        # 2001:db8::1 would split at its last colon into a wrong host and port.
        raise ValueError(f"an IPv6 address needs brackets: '[address]:port', got {value!r}")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"port must be a number, got {port_text!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be between 0 and 65535, got {port}")
    return HostPort(host, port)


Address = Annotated[HostPort, BeforeValidator(parse_host_port), PlainSerializer(str)]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def _parse_networks(value: Any) -> Any:
    """Accept a list or a comma-separated string of IP addresses/networks; check each."""
    import ipaddress

    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ValueError("expected a list of IP addresses or networks")
    networks = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            networks.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address or network") from None
    if not networks:
        # ECOENV_ALLOW=$UNSET_VAR in a shell script: an allowlist that matches
        # nobody would start cleanly and then turn every client away.
        raise ValueError("an empty allowlist would refuse every client; "
                         "leave the setting out to allow anyone")
    return networks


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _non_empty_path(value: Any) -> Any:
    # An empty string would become Path("."): files in whatever the current
    # directory happens to be, with no error (ECOENV_LOG_DIR= in a shell script).
    if isinstance(value, str) and not value.strip():
        raise ValueError("an empty path is not allowed; leave the setting out to use the default")
    return value


NonEmptyPath = Annotated[Path, BeforeValidator(_non_empty_path)]


class Settings(BaseModel):
    """Every setting of an application; read it from code as ``app.config``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    instance: str
    tcp: Address | None = None
    udp: Address | None = None
    uds: NonEmptyPath | None = None
    default_dir: NonEmptyPath = Field(default_factory=lambda: Path(tempfile.gettempdir()) / "ecosys")
    lock_dir: NonEmptyPath | None = None
    log_dir: NonEmptyPath | None = None
    queue_dir: NonEmptyPath | None = None
    log_level: Annotated[LogLevel, BeforeValidator(_upper)] = "INFO"
    log_max_size: int = Field(10 * 1024 * 1024, ge=1024)
    log_backups: int = Field(5, ge=1, le=1000)
    log_compress: bool = False
    log_console: bool = False
    max_message_size: int = Field(DEFAULT_MAX_MESSAGE_SIZE, ge=1024)
    # Peers (IP addresses or networks) allowed on TCP and UDP; None: anyone who
    # can reach the listening address. Others get status 200.
    allow: Annotated[list[str] | None, BeforeValidator(_parse_networks)] = None
    # Finite: an infinite grace lets one stuck handler keep the process from ever exiting.
    shutdown_grace: float = Field(10.0, ge=0, allow_inf_nan=False)
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    stat_gp: int = Field(300, ge=1)
    stat_hl: int = Field(12, ge=1)
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def lock_path(self) -> Path:
        """The single-instance lock file."""
        return (self.lock_dir or self.default_dir) / f"{self.name}-{self.instance}.lock"

    @property
    def log_path(self) -> Path:
        """The log file."""
        return (self.log_dir or self.default_dir) / f"{self.name}-{self.instance}.log"

    @property
    def uds_path(self) -> Path | None:
        """The UDS socket path with a ``DEFAULT`` basename resolved."""
        if self.uds is None:
            return None
        path = self.uds
        if path.name == "DEFAULT":
            base = self.default_dir if str(path) == "DEFAULT" else path.parent
            path = base / f"{self.name}_{self.instance}.uds.sock"
        return path.absolute()


# Settings that can come from any level; transports and extra have their own rules.
LEVELLED_KEYS = tuple(
    k for k in Settings.model_fields if k not in ("name", "instance", "extra", *TRANSPORTS)
)
FILE_KEYS = tuple(k for k in Settings.model_fields if k not in ("name", "instance"))


def to_snake_case(text: str) -> str:
    """``EchoServer``, ``echo-server`` and ``echo server`` all become ``echo_server``."""
    text = re.sub(r"[^0-9A-Za-z]+", "_", text)
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text)
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", text)
    return text.strip("_").lower()


def check_name(name: str) -> str:
    """Validate an application name."""
    if not NAME_PATTERN.match(name):
        raise ConfigurationError(
            f"application name {name!r} must be snake_case: a lowercase letter, then "
            "lowercase letters, digits or underscores"
        )
    return name


def check_instance(instance: str) -> str:
    """Validate an instance id (it becomes part of environment variable names)."""
    if not INSTANCE_PATTERN.match(instance):
        raise ConfigurationError(
            f"instance {instance!r} may contain only letters, digits and underscores"
        )
    return instance


class Layer:
    """Values from one source, each with a label saying exactly where it came from."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.origins: dict[str, str] = {}

    def set(self, key: str, value: Any, origin: str) -> None:
        """Record *value* for *key*, coming from *origin*."""
        self.values[key] = value
        self.origins[key] = origin


def code_layer(values: Mapping[str, Any]) -> Layer:
    """Values passed to ``Application(config=...)``."""
    layer = Layer()
    for key, value in values.items():
        if key not in FILE_KEYS:
            raise ConfigurationError(f"unknown setting {key!r} in Application(config=...)")
        if key == "extra":
            if not isinstance(value, Mapping):
                raise ConfigurationError("Application(config=...) key 'extra' must be a mapping")
            for extra_key, extra_value in value.items():
                layer.set(f"extra.{extra_key}", extra_value, f"Application(config=...) extra[{extra_key!r}]")
        else:
            layer.set(key, value, f"Application(config=...) key {key!r}")
    return layer


def env_layers(name: str, instance: str, environ: Mapping[str, str]) -> list[Layer]:
    """The machine, application and instance environment levels, lowest first."""
    app_suffix = "_" + name.upper()
    inst_suffix = app_suffix + "_" + instance.upper()
    machine, application, inst = Layer(), Layer(), Layer()
    for key in LEVELLED_KEYS:
        base = ENV_PREFIX + key.upper()
        for layer, var in ((machine, base), (application, base + app_suffix),
                           (inst, base + inst_suffix)):
            if var in environ:
                layer.set(key, environ[var], f"environment variable {var}")
    for key in TRANSPORTS:
        var = ENV_PREFIX + key.upper() + inst_suffix
        if var in environ:
            inst.set(key, environ[var], f"environment variable {var}")
    extra_prefix = ENV_PREFIX + "EXTRA" + inst_suffix + "_"
    for var, value in environ.items():
        if var.startswith(extra_prefix) and len(var) > len(extra_prefix):
            extra_key = var[len(extra_prefix):]
            inst.set(f"extra.{extra_key}", value, f"environment variable {var}")
    return [machine, application, inst]


def file_layer(path: Path) -> Layer:
    """Values from a JSON configuration file (only ever the one given with -c)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read configuration file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigurationError(
            f"configuration file {path} is not valid UTF-8: byte {exc.start} cannot be decoded"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"configuration file {path} is not valid JSON: {exc.msg} at line {exc.lineno} "
            f"column {exc.colno}"
        ) from None
    except RecursionError:
        raise ConfigurationError(f"configuration file {path} is nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"configuration file {path} must hold a JSON object")
    layer = Layer()
    for key, value in data.items():
        if key not in FILE_KEYS:
            raise ConfigurationError(
                f"configuration file {path}: unknown key {key!r} "
                f"(known keys: {', '.join(FILE_KEYS)})"
            )
        if key == "extra":
            if not isinstance(value, dict):
                raise ConfigurationError(f"configuration file {path}: key 'extra' must be an object")
            for extra_key, extra_value in value.items():
                origin = f"configuration file {path} key extra.{extra_key}"
                layer.set(f"extra.{extra_key}", extra_value, origin)
        else:
            layer.set(key, value, f"configuration file {path} key {key!r}")
    return layer


def flag_layer(flags: Mapping[str, Any]) -> Layer:
    """Values given on the command line (None means the flag was not given)."""
    layer = Layer()
    for key, value in flags.items():
        if value is None:
            continue
        if key == "extra":
            for item in value:
                extra_key, sep, extra_value = item.partition("=")
                if not sep or not extra_key:
                    raise ConfigurationError(f"flag --extra expects KEY=VALUE, got {item!r}")
                layer.set(f"extra.{extra_key}", extra_value, f"flag --extra {extra_key}")
        else:
            layer.set(key, value, f"flag --{key}")
    return layer


def build_settings(name: str, instance: str, layers: list[Layer]) -> Settings:
    """Merge *layers* (lowest precedence first) and validate the result."""
    merged: dict[str, Any] = {"name": check_name(name), "instance": check_instance(instance)}
    origins: dict[str, str] = {}
    extra: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.values.items():
            if key.startswith("extra."):
                extra[key[len("extra."):]] = value
            else:
                merged[key] = value
            origins[key] = layer.origins[key]
    merged["extra"] = extra
    try:
        return Settings.model_validate(merged)
    except pydantic.ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            key = str(err["loc"][0]) if err["loc"] else "?"
            origin = origins.get(key, f"setting {key!r}")
            value = merged.get(key)
            problems.append(f"{origin}: {err['msg']} (value {value!r})")
        raise ConfigurationError("invalid configuration: " + "; ".join(problems)) from None


def load_settings(
    name: str,
    instance: str,
    *,
    code: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings of (name, instance) from every source, in precedence order."""
    layers = [code_layer(code or {})]
    layers += env_layers(name, instance, os.environ if environ is None else environ)
    if config_file is not None:
        layers.append(file_layer(Path(config_file)))
    layers.append(flag_layer(flags or {}))
    return build_settings(name, instance, layers)
