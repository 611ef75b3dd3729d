"""The musad Debian package: built here (no torch inside), inspected, extracted and run.

One build per module (no compression, no byte-compiling: the test checks the package's
shape, `make deb` does the full build).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "installer"))
import build_deb  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is not installed")


def _python() -> str:
    """An interpreter of the same minor version as this one, as the build requires."""
    for cand in (f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}", "/usr/bin/python3"):
        if os.path.exists(cand) and build_deb.python_version(cand) == sys.version_info[:2]:
            return cand
    pytest.skip(f"no system Python {sys.version_info[0]}.{sys.version_info[1]} to build the venv from")


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("deb")
    return build_deb.build(out, python=_python(), compression="none", compile_bytecode=False,
                           work=tmp_path_factory.mktemp("work"))


@pytest.fixture(scope="module")
def extracted(deb, tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("root")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root


@pytest.fixture(scope="module")
def control_dir(deb, tmp_path_factory) -> pathlib.Path:
    d = tmp_path_factory.mktemp("control")
    subprocess.run(["dpkg-deb", "-e", str(deb), str(d)], check=True)
    return d


def _field(deb, name) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.timeout(300)
def test_file_name_and_control_fields(deb):
    version = _field(deb, "Version")
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    assert deb.name == f"musa-ops-daemon_{version}_{arch}.deb"
    assert _field(deb, "Package") == "musa-ops-daemon"
    assert _field(deb, "Architecture") == arch
    depends = _field(deb, "Depends")
    assert "python3 (>= 3.10)" in depends and "adduser" in depends
    assert f"python{sys.version_info[0]}.{sys.version_info[1]}" in depends
    assert int(_field(deb, "Installed-Size")) > 1000
    assert _field(deb, "Maintainer") and _field(deb, "Description").startswith("musad")


@pytest.mark.timeout(300)
def test_file_list_has_the_layout_and_no_torch(deb):
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    paths = {line.split()[5].lstrip(".") for line in listing.splitlines()}
    for expected in (
        "/usr/bin/musad",
        "/etc/musad/musad.toml",
        "/lib/systemd/system/musad.service",
        "/opt/musa-ops/venv/pyvenv.cfg",
        "/opt/musa-ops/venv/bin/musad",
        "/opt/musa-ops/libexec/musad-ready",
        "/usr/share/doc/musa-ops-daemon/README.md",
        "/usr/share/doc/musa-ops-daemon/copyright",
    ):
        assert expected in paths, expected
    site = next(p for p in paths if p.endswith("/site-packages/")).rstrip("/")
    for pkg in ("musaops/daemon/cli.py", "musaops/daemon/devices/musa.py", "musaops/v1/node_pb2.py",
                "musaops/daemon/engine/csrc/forward_avx512.c",   # compiled on the node at first use
                "grpc/__init__.py", "sqlalchemy/__init__.py", "pymtml.py", "pynvml.py", "psutil/__init__.py"):
        assert f"{site}/{pkg}" in paths, pkg
    # The host brings torch (and torch_musa): nothing of it, nor of the console, is packaged.
    assert not [p for p in paths if p.startswith(f"{site}/torch/") or p.startswith(f"{site}/torch_musa")]
    assert not [p for p in paths if "/PySide6/" in p or p.startswith(f"{site}/musaops/app/")]
    assert not [p for p in paths if "__pycache__" in p]  # built with --no-compile
    musad_line = next(line for line in listing.splitlines() if line.rstrip().endswith("./usr/bin/musad -> /opt/musa-ops/venv/bin/musad"))
    assert musad_line.startswith("l") and " root/root " in musad_line


@pytest.mark.timeout(300)
def test_conffile_and_maintainer_scripts(control_dir, extracted):
    assert (control_dir / "conffiles").read_text() == "/etc/musad/musad.toml\n"
    conf = (extracted / "etc/musad/musad.toml").read_text()
    assert 'state_dir = "/var/lib/musad"' in conf
    # The packaged config is accepted by musad's own loader, with the service's state folder.
    from musaops.daemon.config import load_config

    cfg = load_config(extracted / "etc/musad/musad.toml")
    assert str(cfg.state_dir) == "/var/lib/musad" and cfg.server.listen.startswith("127.0.0.1:")

    for name in ("postinst", "prerm", "postrm"):
        script = control_dir / name
        assert os.access(script, os.X_OK), name
        subprocess.run(["sh", "-n", str(script)], check=True)  # syntax
    postinst = (control_dir / "postinst").read_text()
    assert "adduser --system --group --home /var/lib/musad" in postinst
    assert "install -d -o musad -g musad -m 0750 /var/lib/musad" in postinst
    postrm = (control_dir / "postrm").read_text()
    # The audit database survives `remove`; only `purge` deletes it.
    purge = postrm.partition("purge)")[2].partition(";;")[0]
    assert "rm -rf /var/lib/musad" in purge and "deluser" in purge
    assert postrm.count("rm -rf /var/lib/musad") == 1
    assert "/var/lib/musad" not in (control_dir / "prerm").read_text()
    md5 = (control_dir / "md5sums").read_text()
    assert "  opt/musa-ops/venv/bin/musad\n" in md5 and "  etc/musad/musad.toml\n" in md5


@pytest.mark.timeout(300)
def test_packaged_musad_runs_from_its_own_venv(extracted):
    venv = extracted / "opt/musa-ops/venv"
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    assert (venv / "bin/musad").read_text().startswith("#!/opt/musa-ops/venv/bin/python\n")
    # Outside /opt the shebang cannot resolve, so call the packaged interpreter directly.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    run = subprocess.run([str(venv / "bin/python"), str(venv / "bin/musad"), "--version"],
                         capture_output=True, text=True, env=env, timeout=60, cwd=extracted)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"musad {_field_version(extracted)}"
    where = subprocess.run(
        [str(venv / "bin/python"), "-c",
         "import sys, musaops.daemon, grpc; from musaops.daemon.devices import detect; "
         "print(musaops.daemon.__file__); print(grpc.__file__); print(detect('cpu').backend); "
         "print('torch' in sys.modules)"],
        capture_output=True, text=True, env=env, timeout=60, cwd=extracted,
    )
    assert where.returncode == 0, where.stderr
    daemon_file, grpc_file, backend, torch_loaded = where.stdout.split()
    assert daemon_file.startswith(str(venv)) and grpc_file.startswith(str(venv))
    assert backend == "cpu" and torch_loaded == "False"
    # No path of the build machine leaks into the venv's launchers.
    for f in (venv / "bin").iterdir():
        if f.is_file() and not f.is_symlink():
            assert str(extracted) not in f.read_text(errors="replace")
            assert str(REPO) not in f.read_text(errors="replace")


def _field_version(extracted) -> str:
    import email

    meta = next((extracted / "opt/musa-ops/venv").glob("lib/python3*/site-packages/musa_ops-*.dist-info/METADATA"))
    return email.message_from_string(meta.read_text())["Version"]


@pytest.mark.timeout(120)
def test_unit_passes_systemd_analyze_verify(extracted, tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    unit = (extracted / "lib/systemd/system/musad.service").read_text()
    # verify checks that ExecStart binaries exist: point them into the extracted tree.
    unit = unit.replace("/usr/bin/musad", str(extracted / "opt/musa-ops/venv/bin/musad"))
    unit = unit.replace("/opt/musa-ops/libexec/", str(extracted / "opt/musa-ops/libexec") + "/")
    (tmp_path / "musad.service").write_text(unit)
    proc = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "musad.service")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr
    for directive in ("User=musad", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                      "PrivateTmp=yes", "StateDirectory=musad", "ConfigurationDirectory=musad",
                      "Restart=on-failure", "DevicePolicy=closed", "DeviceAllow=char-drm rw",
                      "DeviceAllow=char-mtgpu* rw", "DeviceAllow=char-nvidia* rw",
                      "StandardOutput=journal"):
        assert f"\n{directive}\n" in unit, directive
    security = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(tmp_path / "musad.service")],
                              capture_output=True, text=True, timeout=60)
    if security.returncode == 0 or "exposure level" in security.stdout:
        score = float(security.stdout.split("exposure level for musad.service:")[1].split()[0])
        assert score <= 4.0, security.stdout[-400:]


def test_set_state_dir_handles_commented_and_missing_sections():
    commented = "# [server]\n# listen = \"x\"\n\n# [storage]\n# state_dir = \"\"\n# db_url = \"\"\n\n# [models]\n"
    out = build_deb.set_state_dir(commented, "/var/lib/musad")
    assert "[storage]\nstate_dir = \"/var/lib/musad\"\n# db_url" in out and "# [models]" in out
    live = "[storage]\ndb_url = \"sqlite:///x\"\n[models]\ndir = \"m\"\n"
    out = build_deb.set_state_dir(live, "/var/lib/musad")
    assert out.index('state_dir = "/var/lib/musad"') < out.index("[models]")
    assert build_deb.set_state_dir("[server]\n", "/s").endswith('[storage]\nstate_dir = "/s"\n')


@pytest.mark.timeout(120)
def test_packaged_daemon_serves_with_the_packaged_config(extracted, tmp_path):
    """The venv is complete: the packaged musad starts on the packaged conffile (state and
    ports overridden to scratch values), reports SERVING, and exits 0 on SIGTERM."""
    import re
    import signal
    import threading

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    venv = extracted / "opt/musa-ops/venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.Popen(
        [str(venv / "bin/python"), str(venv / "bin/musad"), "serve",
         "--config", str(extracted / "etc/musad/musad.toml"), "--listen", "127.0.0.1:0",
         "--metrics-listen", "", "--http-listen", "", "--state-dir", str(tmp_path / "state"), "--device", "cpu"],
        stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )
    lines, port = [], None
    for line in proc.stderr:
        lines.append(line)
        m = re.search(r"listening on .* \(port (\d+)\)", line)
        if m:
            port = int(m[1])
            break
    if port is None:
        proc.kill()
        pytest.fail("packaged musad did not start:\n" + "".join(lines))
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=30)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        reader.join(5)
    assert rc == 0, "".join(lines)
    assert (tmp_path / "state" / "musad.db").is_file()


@pytest.mark.timeout(60)
def test_readiness_check_waits_for_the_port(extracted, tmp_path):
    import socket

    venv = extracted / "opt/musa-ops/venv"
    script = extracted / "opt/musa-ops/libexec/musad-ready"
    assert script.read_text().startswith("#!/opt/musa-ops/venv/bin/python\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        conf = tmp_path / "musad.toml"
        conf.write_text(f'[server]\nlisten = "127.0.0.1:{port}"\n[storage]\nstate_dir = "{tmp_path}"\n')
        ok = subprocess.run([str(venv / "bin/python"), str(script), "--config", str(conf), "--timeout", "20"],
                            capture_output=True, text=True, env=env, timeout=40)
        assert ok.returncode == 0, ok.stderr
    late = subprocess.run([str(venv / "bin/python"), str(script), "--config", str(conf), "--timeout", "0.5"],
                          capture_output=True, text=True, env=env, timeout=40)
    assert late.returncode == 1 and f"127.0.0.1:{port}" in late.stderr
    conf.write_text('[server]\nlisten = "nonsense"\n')
    bad = subprocess.run([str(venv / "bin/python"), str(script), "--config", str(conf)],
                         capture_output=True, text=True, env=env, timeout=40)
    assert bad.returncode == 2 and "server.listen" in bad.stderr
