"""Loading a config: defaults < TOML file < overrides, each value coerced and checked once.

:func:`resolve` serves ``fedlr simulate`` (a scenario file plus ``--set key=value``, read by
:func:`parse_override`); :func:`from_run_config` serves ``flwr run`` (Flower's run config).
Strategy tables (``[strategy.NAME]``) are kept as Flower's dotted keys (``strategy.NAME.KEY``),
each value checked as the schema key it sets (:func:`fedlr.config.strategies.table_spec`). Any
other table is a section of flat keys: ``[schedule] floor = 0.1`` (Flower: ``schedule.floor``)
is ``schedule-floor = 0.1`` (:func:`section_key`).
Both fill the users'-files and small-cluster defaults, then :func:`~fedlr.config.checks.validate`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedlr.config.checks import validate
from fedlr.config.choices import MAX_CONFIG_BYTES, is_files
from fedlr.config.schema import DEFAULTS, SCHEMA
from fedlr.config.strategies import DEFAULT_STRATEGIES, TABLES, strategy_tables, table_spec
from fedlr.config.values import ConfigError


def _coerce(key: str, value: Any, where: str | None = None) -> Any:
    """``value`` as key ``key``'s type, checked; an error names ``where`` (default: ``key``)."""
    where = where or key
    spec = SCHEMA[key]
    if spec.kind is str and isinstance(value, list | tuple):
        value = ",".join(str(item) for item in value)
    if spec.kind is str and isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)  # --set hard-classes=3 or name=2024 read as TOML numbers
    if spec.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, spec.kind) or (spec.kind is not bool and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {spec.allowed}, got {value!r}")
    if not spec.check(value):
        raise ConfigError(f"{where}: expected {spec.allowed}, got {value!r}")
    return value


def _is_table_key(key: str) -> bool:
    return key == TABLES or key.startswith(TABLES + ".")


def _flat(layer: Mapping[str, Any]) -> dict[str, Any]:
    """A layer's tables as Flower's dotted keys (``[strategy.cos-lo]`` -> ``strategy.cos-lo.rule``).

    A strategy table stays a table (:func:`_set`); any other table is a section of flat keys:
    ``[schedule]`` with ``floor = 0.1`` is ``schedule.floor``, the key ``schedule-floor``.
    """
    out: dict[str, Any] = {}
    for key, value in layer.items():
        if isinstance(value, Mapping):
            out.update(_flat({f"{key}.{k}": v for k, v in value.items()}))
        else:
            out[key] = value
    return out


def section_key(key: str) -> str:
    """The schema key a section's dotted key sets: ``schedule.floor`` -> ``schedule-floor``.

    Raises
    ------
    ConfigError
        The section holds no such key (the message lists the keys it does hold).
    """
    flat = key.replace(".", "-")
    if flat in SCHEMA:
        return flat
    section = key.split(".")[0]
    held = [k[len(section) + 1 :] for k in SCHEMA if k.startswith(section + "-")]
    if not held:
        raise ConfigError(
            f"{key}: no section [{section}]; a section's keys are a key's words after its first "
            f"(schedule.floor is schedule-floor); allowed keys: {', '.join(SCHEMA)}"
        )
    raise ConfigError(
        f"{key}: [{section}] has no key {flat[len(section) + 1 :]!r}; it holds {', '.join(held)}"
    )


def _set(values: dict[str, Any], key: str, value: Any) -> str:
    """Set one key of a layer (a schema key, coerced and checked, or a strategy table's key).

    A section's dotted key sets its schema key (:func:`section_key`). Returns the key set.
    """
    if _is_table_key(key):
        if key.count(".") < 2:  # strategy = ..., strategy.NAME = ...
            raise ConfigError(
                f"{key}: expected a table of a named strategy, [{TABLES}.NAME] with rule = ... "
                f"(in Flower's run config, keys {TABLES}.NAME.KEY), got {value!r}"
            )
        values[key] = value  # checked with its table, once every layer is in
        return key
    if "." in key:
        flat = section_key(key)
        values[flat] = _coerce(flat, value, key)
        return flat
    if key not in SCHEMA:
        raise ConfigError(f"unknown config key {key!r}; allowed: {', '.join(SCHEMA)}")
    values[key] = _coerce(key, value)
    return key


def _set_layer(values: dict[str, Any], layer: Mapping[str, Any]) -> dict[str, Any]:
    """Set every key of one layer; a key given both flat and in its section is refused.

    Returns the layer's values by the key they set.
    """
    given: dict[str, str] = {}
    out: dict[str, Any] = {}
    for key, value in _flat(layer).items():
        flat = _set(values, key, value)
        if flat in given:
            raise ConfigError(
                f"{key}: {flat} is set twice in one place (as {given[flat]} and {key}); "
                "expected one of them"
            )
        given[flat] = key
        out[flat] = values[flat]
    return out


def _coerce_tables(values: dict[str, Any]) -> dict[str, Any]:
    """Each strategy table parsed and its values coerced and checked as the schema's keys."""
    for name, table in strategy_tables(values).items():
        spec = table_spec(name, table)
        for key, value in spec.overrides:
            path = spec.where(key)
            values[path] = _coerce(key, value, path)
    return values


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one ``key=value`` override; the value is read as TOML, else kept as a string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value")
    key, raw = (part.strip() for part in text.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def resolve(file: Path | None = None, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Resolve defaults < TOML file < overrides and validate the result.

    Raises
    ------
    ConfigError
        One line naming the key and what is allowed.
    """
    values: dict[str, Any] = dict(DEFAULTS)
    layers: list[Mapping[str, Any]] = []
    if file is not None:
        try:
            path = Path(file)
            if path.is_file() and path.stat().st_size > MAX_CONFIG_BYTES:
                raise ConfigError(
                    f"config file {file}: expected at most {MAX_CONFIG_BYTES} bytes of TOML, "
                    f"got {path.stat().st_size}"
                )
            if not path.is_file() and path.exists():  # /dev/zero, a FIFO, a directory
                raise ConfigError(f"config file {file}: expected a regular file")
            layers.append(tomllib.loads(path.read_text()))
        except FileNotFoundError:
            raise ConfigError(f"config file {file}: not found") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"config file {file}: cannot be read as TOML text ({err})") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"config file {file}: not valid TOML ({err})") from None
    layers.append(dict(overrides or {}))
    explicit: set[str] = set()
    for layer in layers:
        explicit |= set(_set_layer(values, layer))
    values = _coerce_tables(values)
    return validate(_cluster_defaults(_file_defaults(values, explicit), explicit))


# Users' files inject nothing unless asked: these keys' digits defaults become 0 there.
# The oracle reads injected truth, which real files lack: it is left out of their default list.
FILE_DEFAULTS = {
    "noisy-clients": 0,
    "hard-clean-clients": 0,
    "strategies": ",".join(s for s in DEFAULT_STRATEGIES if s != "oracle-noise-rates"),
}


def _file_defaults(values: dict[str, Any], explicit: set[str]) -> dict[str, Any]:
    """With users' files or task, the keys not set explicitly get the files' defaults.

    Nothing is injected and the oracle is not run by default (:data:`FILE_DEFAULTS`), and
    ``num-clients`` is the number of sites found in ``data-files`` (with no ``data-files``, a
    deployment whose SuperNodes read their own ``data-path``, it stays as set).
    """
    if not is_files(values) and not values["task"]:
        return values
    for key, default in FILE_DEFAULTS.items():
        if key not in explicit:
            values[key] = default
    if str(values["data-files"]).strip():
        # Imported here, when files are counted: it brings pandas.
        from fedlr.config.site_files import count_sites

        found = count_sites(values)
        if "num-clients" in explicit and values["num-clients"] != found:
            raise ConfigError(
                f"num-clients: data-files holds {found} sites; expected {found} (or leave "
                f"num-clients unset), got {values['num-clients']}"
            )
        values["num-clients"] = found
    return values


def _cluster_defaults(values: dict[str, Any], explicit: set[str]) -> dict[str, Any]:
    """Fewer clients than the default noise needs: the injected counts scale with num-clients.

    The digits defaults make 8 of 10 clients noisy and 1 hard-but-clean. When neither count is
    set and they do not fit ``num-clients`` (a 2-node cluster), they become ``8n // 10`` and
    ``n // 10``; a count that is set is kept (and checked).
    """
    if {"noisy-clients", "hard-clean-clients"} & explicit:
        return values
    n = int(values["num-clients"])
    if values["noisy-clients"] + values["hard-clean-clients"] <= n:
        return values
    values["noisy-clients"], values["hard-clean-clients"] = (8 * n) // 10, n // 10
    return values


def from_run_config(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """Resolve a Flower ``context.run_config`` (the app config plus ``--run-config``).

    Strategy tables come as Flower flattens ``[tool.flwr.app.config.strategy.NAME]``: dotted
    keys ``strategy.NAME.KEY`` (``strategy.cos-lo.schedule.floor``).

    Flower passes every key of ``[tool.flwr.app.config]``, so a key counts as set (for the
    files' defaults, :data:`FILE_DEFAULTS`) when its value differs from fedlr's default: under
    ``flwr run``, ``noisy-clients=8`` on files (fedlr's default value) reads as unset, i.e. 0.
    """
    values: dict[str, Any] = dict(DEFAULTS)
    flat = _flat(run_config)
    # Flower passes every key of the app config: the flat default and a section's value
    # (--run-config "schedule.floor=0.2") can both come. The one that is not the default wins.
    sectioned = {k: v for k, v in flat.items() if "." in k and not _is_table_key(k)}
    for key in sectioned:
        plain = section_key(key)
        if plain in flat and _coerce(plain, flat[plain]) == DEFAULTS[plain]:
            del flat[plain]
    set_ = _set_layer(values, flat)
    explicit = {key for key, value in set_.items() if key in SCHEMA and value != DEFAULTS[key]}
    values = _coerce_tables(values)
    return validate(_cluster_defaults(_file_defaults(values, explicit), explicit))


def to_toml(values: Mapping[str, Any]) -> str:
    """Render a resolved config as TOML, as ``resolve`` reads it: flat keys, then the tables.

    The strategy tables' dotted keys (``strategy.cos-lo.schedule.floor``) become tables again
    (``[strategy.cos-lo.schedule]``, ``floor = ...``).
    """
    import tomli_w

    flat = {k: v for k, v in values.items() if not _is_table_key(k)}
    nested: dict[str, Any] = {}
    for key, value in values.items():
        if _is_table_key(key):
            *parents, leaf = key.split(".")
            node = nested
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
    return tomli_w.dumps({**flat, **nested})
