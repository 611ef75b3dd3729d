"""Config: defaults, file + flag precedence, path resolution, and errors that name the key."""

from __future__ import annotations

import dataclasses
import pathlib
import re

import pytest

from musaops.daemon.config import Config, ConfigError, load_config

ROOT = pathlib.Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "resources" / "musad.toml"


def test_defaults(tmp_path):
    cfg = load_config(None, {"storage.state_dir": str(tmp_path)})
    assert cfg.server.listen == "127.0.0.1:50051" and cfg.server.metrics_listen == "127.0.0.1:9400"
    assert cfg.server.grace_seconds == 30.0 and not cfg.server.insecure
    assert cfg.engine.max_models == 4 and cfg.engine.default_kv_cache_fraction == 0.5
    assert cfg.telemetry.history_seconds == 900 and cfg.auth.required and not cfg.audit.store_prompts
    assert cfg.storage.db_url == f"sqlite:///{tmp_path / 'musad.db'}"
    assert cfg.models.dir == str(tmp_path / "models") and cfg.models.device == "auto"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.server = None  # type: ignore[misc]


def test_sample_config_uncommented_equals_the_defaults(tmp_path):
    """resources/musad.toml documents every key with its default value."""
    text = SAMPLE.read_text()
    # uncomment "# key = value" lines (the first of each key: the default, not an example)
    seen, lines = set(), []
    section = ""
    for line in text.splitlines():
        if line.startswith("["):
            section = line
        m = re.match(r"# (\w+) = (.*)$", line)
        if m and (section, m.group(1)) not in seen and "example" not in m.group(2) and "/etc/" not in m.group(2):
            seen.add((section, m.group(1)))
            line = f"{m.group(1)} = {m.group(2)}"
        lines.append(line)
    (tmp_path / "all.toml").write_text("\n".join(lines))
    cfg = load_config(tmp_path / "all.toml", {"storage.state_dir": str(tmp_path)})
    assert cfg == load_config(None, {"storage.state_dir": str(tmp_path)})
    documented = {(s.strip("[]"), k) for s, k in seen}
    def keys(prefix, obj):
        for k in dataclasses.fields(obj):
            value = getattr(obj, k.name)
            if dataclasses.is_dataclass(value):
                yield from keys(f"{prefix}.{k.name}", value)
            else:
                yield prefix, k.name

    expected = {key for f in dataclasses.fields(Config) for key in keys(f.name, f.default_factory())}
    assert expected - documented <= {("tls", "cert"), ("tls", "key"), ("tls", "client_ca")}
    for key in ("cert", "key", "client_ca"):
        assert f"# {key} = " in text


def test_flags_override_the_file_and_paths_resolve(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "musad.toml").write_text(
        '[server]\nlisten = "0.0.0.0:6000"\ngrace_seconds = 3\n[models]\ndir = "models"\ndevice = "cpu"\n'
        '[storage]\nstate_dir = "state"\n[engine]\nmax_models = 2\n')
    cfg = load_config(tmp_path / "etc" / "musad.toml", {"server.listen": "127.0.0.1:7000"})
    assert cfg.server.listen == "127.0.0.1:7000" and cfg.server.grace_seconds == 3.0
    assert cfg.models.dir == str(tmp_path / "etc" / "models")  # relative to the file
    assert cfg.storage.state_dir == str(tmp_path / "etc" / "state")
    assert cfg.engine.max_models == 2 and cfg.models.device == "cpu"


@pytest.mark.parametrize("toml, words", [
    ('[server]\nlisten = "localhost"\n', "server.listen: expected HOST:PORT"),
    ('[server]\nlisten = "h:70000"\n', "server.listen: port 70000 is outside"),
    ('[server]\ngrace_seconds = -1\n', "server.grace_seconds: must not be negative"),
    ('[server]\ninsecure = "yes"\n', "server.insecure: expected bool"),
    ('[engine]\nmax_queue = 1.5\n', "engine.max_queue: expected int"),
    ('[engine]\nmax_queue = true\n', "engine.max_queue: expected int"),
    ('[engine]\ndefault_kv_cache_fraction = 1\n', "engine.default_kv_cache_fraction: must be in (0, 0.95]"),
    ('[telemetry]\nhistory_seconds = 0\n', "telemetry.history_seconds: must be 1..86400"),
    ('[auth]\nrequired = 1\n', "auth.required: expected bool"),
    ('[auth]\nwho = 1\n', "auth.who: unknown key"),
    ('server = 1\n', "server: expected a [server] table"),
    ('[tls]\ncert = "a.pem"\n', "tls.cert and tls.key: give both or neither"),
])
def test_bad_files_name_the_key(tmp_path, toml, words):
    (tmp_path / "c.toml").write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "c.toml", {"storage.state_dir": str(tmp_path)})
    assert words in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_metrics_listen_may_be_disabled(tmp_path):
    assert load_config(None, {"server.metrics_listen": "", "storage.state_dir": str(tmp_path)}).server.metrics_listen == ""


@pytest.mark.parametrize("toml, key", [
    ("[server]\ngrace_seconds = nan\n", "server.grace_seconds"),
    ("[server]\ngrace_seconds = inf\n", "server.grace_seconds"),
    ("[server]\ngrace_seconds = -1\n", "server.grace_seconds"),
    ("[engine]\ndefault_kv_cache_fraction = nan\n", "engine.default_kv_cache_fraction"),
    ("[engine]\nmax_tokens = 9223372036854775807\n", "engine.max_tokens"),  # would overflow GetInfo's uint32
    ("[engine]\nmax_models = 0\n", "engine.max_models"),
    ("[engine]\nprefix_cache_scope = \"tenant\"\n", "engine.prefix_cache_scope"),
    ("[engine]\nprefix_caching = 1\n", "engine.prefix_caching"),
])
def test_extreme_values_name_the_key(tmp_path, toml, key):
    f = tmp_path / "musad.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_config(f, {"storage.state_dir": str(tmp_path)})
