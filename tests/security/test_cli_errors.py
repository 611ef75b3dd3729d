"""Ordinary mistakes with `musad token | audit | certs | usage | serve`, run as subprocesses:
exit 2 and one sentence on stderr naming the problem, never a traceback; read-only commands
never create a database; a start that fails records no config change."""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import sys

import pytest

from musaops.daemon.cli import build_parser
from musaops.daemon.trust.audit import AuditFilter, AuditLog

pytestmark = pytest.mark.timeout(180)
MUSAD = [sys.executable, "-m", "musaops.daemon.cli"]


def _musad(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*MUSAD, *args], capture_output=True, text=True, timeout=timeout)


def _sentence(r: subprocess.CompletedProcess, *words: str, code: int = 2) -> str:
    err = r.stderr.strip()
    assert r.returncode == code, (r.returncode, err)
    assert "Traceback" not in err and len(err.splitlines()) == 1 and err.startswith("musad: "), err
    assert "GRPC_VERBOSITY" not in err and "sqlalche.me" not in err, err
    for w in words:
        assert w in err, err
    return err


# -- read-only commands refuse a database that does not exist --------------------------------

@pytest.mark.parametrize("argv", [
    ("audit", "verify"),
    ("audit", "export", "--format", "csv", "--out", "{tmp}/x.csv"),
    ("token", "list"),
    ("usage", "export"),
])
def test_read_only_commands_refuse_a_missing_database(tmp_path, argv):
    argv = [a.format(tmp=tmp_path) for a in argv]
    _sentence(_musad(*argv, "--db", str(tmp_path / "typo.db")), "typo.db", "does not exist")
    assert not (tmp_path / "typo.db").exists() and not (tmp_path / "x.csv").exists()
    _sentence(_musad(*argv, "--state-dir", str(tmp_path / "no-such-state")), "does not exist")
    assert not (tmp_path / "no-such-state").exists()


def test_serve_does_not_create_the_folder_of_an_explicit_db(tmp_path):
    db = tmp_path / "missing" / "dir" / "musad.db"
    r = _musad("serve", "--db", str(db), "--state-dir", str(tmp_path / "state"), "--listen", "127.0.0.1:0",
               "--metrics-listen", "", "--http-listen", "", "--device", "cpu")
    _sentence(r, str(db.parent), "does not exist")
    assert not (tmp_path / "missing").exists()


def test_token_create_out_does_not_create_folders(tmp_path):
    out = tmp_path / "no" / "such" / "admin.token"
    r = _musad("token", "create", "--name", "ops", "--role", "admin", "--out", str(out),
               "--state-dir", str(tmp_path / "state"))
    _sentence(r, str(out.parent), "does not exist")
    assert not (tmp_path / "no").exists()
    # and no token was left behind for a file that was never written
    r = _musad("token", "create", "--name", "ops", "--role", "admin", "--out", str(tmp_path / "t"),
               "--state-dir", str(tmp_path / "state"))
    assert r.returncode == 0, r.stderr


# -- one sentence for every ordinary mistake --------------------------------------------------

@pytest.mark.parametrize("toml, words", [
    (None, "does not exist"),
    ("[storage\n", "not valid TOML"),
    ("[storage]\ndb_ulr = 'x'\n", "storage.db_ulr: unknown key"),
])
@pytest.mark.parametrize("argv", [("token", "list"), ("audit", "verify"), ("usage", "export"),
                                  ("token", "create", "--name", "a", "--role", "viewer")])
def test_config_mistakes_in_every_subcommand(tmp_path, toml, words, argv):
    cfg = tmp_path / "musad.toml"
    if toml is not None:
        cfg.write_text(toml)
    _sentence(_musad(*argv, "--config", str(cfg)), "configuration error", words)


@pytest.mark.parametrize("url, words", [
    ("nonsense://x", "nonsense"),
    ("mysql://root@127.0.0.1/musad", "driver"),
    ("postgresql+psycopg://postgres@127.0.0.1:1/test", "cannot connect"),
])
@pytest.mark.parametrize("argv", [("token", "list"), ("audit", "verify"),
                                  ("token", "create", "--name", "a", "--role", "viewer")])
def test_database_urls_that_cannot_work(url, words, argv):
    _sentence(_musad(*argv, "--db", url), words)


def test_serve_with_an_unusable_database_url(tmp_path):
    r = _musad("serve", "--db", "nonsense://x", "--state-dir", str(tmp_path), "--listen", "127.0.0.1:0",
               "--metrics-listen", "", "--http-listen", "", "--device", "cpu")
    _sentence(r, "nonsense")


def test_verify_export_of_a_missing_file_and_a_malformed_key(tmp_path):
    _sentence(_musad("audit", "verify-export", str(tmp_path / "nope.json")), "nope.json", "does not exist")
    db = ["--db", str(tmp_path / "m.db")]
    assert _musad("token", "create", "--name", "a", "--role", "viewer", *db).returncode == 0
    out = tmp_path / "e.json"
    assert _musad("audit", "export", "--format", "json", "--out", str(out), "--sign",
                  "--state-dir", str(tmp_path), *db).returncode == 0
    err = _sentence(_musad("audit", "verify-export", str(out), "--public-key", "AAAA"), "malformed")
    assert "different key" not in err
    _sentence(_musad("audit", "verify-export", str(out), "--public-key", "not base64!"), "--public-key")


@pytest.mark.parametrize("host", ["bad host!", "-lead.example", "a..b", "x" * 64 + ".com"])
def test_certs_init_refuses_a_bad_host(tmp_path, host):
    _sentence(_musad("certs", "init", str(tmp_path / "pki"), f"--host={host}"), "--host", "DNS name")
    assert not (tmp_path / "pki").exists()


def test_certs_init_accepts_names_and_addresses(tmp_path):
    r = _musad("certs", "init", str(tmp_path / "pki"), "--host", "gpu-01.example.com", "--host", "10.0.0.5",
               "--host", "::1", "--host", "localhost")
    assert r.returncode == 0, r.stderr


def test_a_misspelt_option_prints_the_subcommand_usage():
    r = _musad("serve", "--listn", "1:2")
    assert r.returncode == 2 and "usage: musad serve" in r.stderr and "--listn" in r.stderr
    r = _musad("token", "list", "--dbb", "x")
    assert r.returncode == 2 and "usage: musad token list" in r.stderr


# -- gRPC core's own lines and the config.change record ---------------------------------------

def test_port_in_use_has_no_grpc_core_lines_and_records_no_config_change(tmp_path):
    state = tmp_path / "state"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = _musad("serve", "--listen", f"127.0.0.1:{port}", "--metrics-listen", "", "--http-listen", "",
                   "--device", "cpu", "--state-dir", str(state))
    err = _sentence(r, f"Cannot listen on 127.0.0.1:{port}")
    assert "add_port.cc" not in err and "E1" not in err
    db = state / "musad.db"
    if db.exists():
        with AuditLog.open(str(db), node="x") as log:
            assert log.query(AuditFilter(action="config.change")) == []

    # a start that serves records it once
    proc = subprocess.Popen([*MUSAD, "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "",
                             "--http-listen", "", "--device", "cpu", "--state-dir", str(state)],
                            stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if re.search(r"listening on .* \(port \d+\)", line):
            break
    proc.terminate()
    lines.extend(proc.stderr)
    assert proc.wait(timeout=60) == 0, "".join(lines)
    assert all(line.startswith("time=") for line in lines if line.strip()), "".join(lines)
    with AuditLog.open(str(state / "musad.db"), node="x") as log:
        assert len(log.query(AuditFilter(action="config.change"))) == 1


# -- help ---------------------------------------------------------------------------------------

def _parsers(parser: argparse.ArgumentParser, path: str = "musad"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_option_has_help_and_no_empty_choice():
    missing = []
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if not action.help:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
            assert "" not in (action.choices or ()), f"{path} {action.dest} offers an empty choice"
    assert not missing, missing
    parsers = dict(_parsers(build_parser()))

    def help_of(path: str, option: str) -> str:
        (action,) = [a for a in parsers[path]._actions if option in a.option_strings]
        return action.help % {"default": action.default}

    assert "default 825" in help_of("musad certs init", "--days")
    assert "default <state-dir>/models" in help_of("musad serve", "--models")
    for path in ("musad serve", "musad token list", "musad audit verify"):
        assert "default" in help_of(path, "--state-dir")
    assert "default INFO" in help_of("musad serve", "--log-level")


def test_failed_tls_handshakes_leave_the_log_one_line_per_record(tmp_path):
    assert _musad("certs", "init", str(tmp_path / "pki"), "--host", "localhost").returncode == 0
    pki = tmp_path / "pki"
    proc = subprocess.Popen([*MUSAD, "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "", "--http-listen", "",
                             "--device", "cpu", "--state-dir", str(tmp_path / "state"),
                             "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server-key.pem"),
                             "--client-ca", str(pki / "ca.pem")], stderr=subprocess.PIPE, text=True)
    lines, port = [], None
    for line in proc.stderr:
        lines.append(line)
        if m := re.search(r"listening on .* \(port (\d+)\)", line):
            port = m.group(1)
            break
    try:
        assert port, "".join(lines)
        # plaintext against TLS, and TLS without the client certificate mTLS asks for
        _sentence(_musad("status", "--address", f"127.0.0.1:{port}"), "may require TLS", code=1)
        _sentence(_musad("status", "--address", f"localhost:{port}", "--tls-ca", str(pki / "ca.pem")),
                  "TLS handshake", code=1)
    finally:
        proc.terminate()
        lines.extend(proc.stderr)
        proc.wait(timeout=60)
    assert all(line.startswith("time=") for line in lines if line.strip()), "".join(lines)
