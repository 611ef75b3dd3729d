"""installer/README.md's certificate commands, run as written (sudo dropped, the musad group
replaced by ours, /etc/musad/tls by a temp folder): only the server key becomes readable by
the group; the CA key and the client key stay private to their owner."""

from __future__ import annotations

import grp
import os
import pathlib
import re
import stat
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX modes")


def readme_cert_commands() -> list[str]:
    text = (ROOT / "installer" / "README.md").read_text()
    block = re.search(r"```sh\n(sudo musad certs init [^\n]*\n[^`]*)```", text).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_readme_makes_only_the_server_key_group_readable(tmp_path) -> None:
    init, *perms = readme_cert_commands()
    assert "certs init /etc/musad/tls" in init and perms
    tls = tmp_path / "tls"
    group = grp.getgrgid(os.getgid()).gr_name
    musad = [str(pathlib.Path(sys.executable).parent / "musad")]
    if not pathlib.Path(musad[0]).exists():
        musad = [sys.executable, "-m", "musaops.daemon.cli"]
    args = init.replace("sudo musad ", "").replace("/etc/musad/tls", str(tls)).split()
    subprocess.run(musad + args, check=True, capture_output=True, timeout=60)
    for line in perms:
        cmd = line.replace("sudo ", "").replace("/etc/musad/tls", str(tls))
        cmd = re.sub(r"\bchgrp (-R )?musad\b", lambda m: f"chgrp {m.group(1) or ''}{group}", cmd)
        subprocess.run(cmd, shell=True, check=True, timeout=30)
    mode = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tls.iterdir()}
    assert mode["server-key.pem"] == 0o640
    assert mode["ca-key.pem"] == 0o600, "the CA key must not be readable by the musad group"
    assert mode["client-key.pem"] == 0o600
    for public in ("ca.pem", "server.pem", "client.pem"):
        assert not mode[public] & 0o022, f"{public} is writable by others"
