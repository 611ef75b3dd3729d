"""The .deb's maintainer scripts, run for real with every system command they call replaced
by a logging stub on PATH (the lowest-level fake: nothing on this machine is touched).

Checks the branches that matter: a fresh install creates the user and state folder, an
upgrade does not, `remove` keeps /var/lib/musad (the audit database), `purge` deletes it.
"""

from __future__ import annotations

import os
import pathlib
import subprocess

import pytest

DEBIAN = pathlib.Path(__file__).resolve().parents[2] / "installer" / "debian"
COMMANDS = ("adduser", "deluser", "getent", "install", "chown", "chmod", "systemctl", "rm", "rmdir", "find")
SYSTEMD = os.path.isdir("/run/systemd/system")  # the scripts only call systemctl under systemd


@pytest.fixture
def stubs(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for name in COMMANDS:
        stub = bin_dir / name
        # Logs its argv; exit status from STUB_RC_<name> (default 0).
        stub.write_text(
            "#!/bin/sh\n"
            f'echo "{name} $*" >> "$STUB_LOG"\n'
            f'exit "${{STUB_RC_{name}:-0}}"\n'
        )
        stub.chmod(0o755)

    def run(script: str, *args: str, **rcs: int) -> tuple[int, list[str]]:
        log.write_text("")
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "STUB_LOG": str(log)}
        env.update({f"STUB_RC_{k}": str(v) for k, v in rcs.items()})
        proc = subprocess.run(["/bin/sh", str(DEBIAN / script), *args], env=env,
                              capture_output=True, text=True, timeout=30)
        return proc.returncode, log.read_text().splitlines()

    return run


def test_fresh_install_creates_user_state_folder_and_config_permissions(stubs):
    rc, calls = stubs("postinst", "configure", "", getent=2)  # no musad user, no groups
    assert rc == 0
    assert "adduser --system --group --home /var/lib/musad --no-create-home --gecos musa-ops node daemon musad" in calls
    assert "install -d -o musad -g musad -m 0750 /var/lib/musad" in calls
    assert "chown root:musad /etc/musad/musad.toml" in calls and "chmod 0640 /etc/musad/musad.toml" in calls
    assert not [c for c in calls if c.startswith("adduser --quiet musad")]  # groups absent
    if SYSTEMD:
        assert "systemctl enable musad.service" in calls and "systemctl start musad.service" in calls
    else:
        assert not [c for c in calls if c.startswith("systemctl")]


def test_upgrade_keeps_the_user_and_joins_gpu_groups(stubs):
    rc, calls = stubs("postinst", "configure", "0.0.9")  # getent finds user and groups
    assert rc == 0
    assert not [c for c in calls if c.startswith("adduser --system")]
    assert "adduser --quiet musad video" in calls and "adduser --quiet musad render" in calls
    if SYSTEMD:
        assert "systemctl try-restart musad.service" in calls
        assert "systemctl start musad.service" not in calls


def test_remove_keeps_the_audit_database_and_purge_deletes_it(stubs):
    rc, calls = stubs("prerm", "remove")
    assert rc == 0 and not [c for c in calls if "/var/lib/musad" in c]
    rc, calls = stubs("postrm", "remove")
    assert rc == 0
    assert not [c for c in calls if c.startswith(("rm ", "rmdir ", "deluser "))]

    rc, calls = stubs("postrm", "purge")
    assert rc == 0
    assert "rm -rf /var/lib/musad /var/cache/musad" in calls
    assert "rmdir /etc/musad" in calls
    assert "deluser --quiet --system musad" in calls


def test_unknown_arguments_fail(stubs):
    assert stubs("postinst", "bogus")[0] == 1
    assert stubs("postrm", "bogus")[0] == 1
