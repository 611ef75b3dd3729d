"""Where the console keeps bearer tokens: the OS keyring, else a file only the user can read.

Tokens never go into the console's SQLite store. `TokenVault` uses the `keyring` package
when it has a working backend (Secret Service, macOS Keychain, Windows Credential Locker:
checked by a write/read/delete round trip, since keyring "succeeds" at import even with
no backend); otherwise a JSON file created with mode 0600 in a 0700 folder, rewritten
atomically. MUSA_CONSOLE_KEYRING=0 forces the file. Keys are opaque strings chosen by the caller (e.g. "profile-3").
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

SERVICE = "musa-console"
TOKENS_FILE = "tokens.json"


def _working_keyring():  # noqa: ANN202
    """The keyring module if its backend really stores secrets, else None."""
    try:
        import keyring
        from keyring.errors import KeyringError
    except ImportError:
        return None
    try:
        backend = keyring.get_keyring()
        if getattr(backend, "priority", 0) <= 0:   # fail.Keyring / null backends
            return None
        probe = "__musa_console_probe__"
        keyring.set_password(SERVICE, probe, "ok")
        ok = keyring.get_password(SERVICE, probe) == "ok"
        keyring.delete_password(SERVICE, probe)
        return keyring if ok else None
    except (KeyringError, OSError, RuntimeError) as exc:   # locked, no D-Bus, ...
        log.info("OS keyring unusable (%s); tokens go to a private file", exc)
        return None
    except Exception as exc:  # a third-party backend failing its own way
        log.info("OS keyring unusable (%s: %s); tokens go to a private file", type(exc).__name__, exc)
        return None


class TokenVault:
    """get/set/delete tokens by key. `use_keyring=None` picks the keyring when it works."""

    def __init__(self, folder: str | os.PathLike[str], use_keyring: bool | None = None) -> None:
        self.path = Path(folder) / TOKENS_FILE
        self._lock = threading.Lock()
        if use_keyring is None and os.environ.get("MUSA_CONSOLE_KEYRING") == "0":
            use_keyring = False   # tests and headless installs can opt out
        self._keyring = _working_keyring() if use_keyring in (None, True) else None
        if use_keyring is True and self._keyring is None:
            raise RuntimeError("no working OS keyring backend")

    @property
    def backend(self) -> str:
        """"keyring" or "file" (for the settings dialog and tests)."""
        return "keyring" if self._keyring is not None else "file"

    def get(self, key: str) -> str | None:
        if self._keyring is not None:
            return self._keyring.get_password(SERVICE, key)
        with self._lock:
            return self._read().get(key)

    def set(self, key: str, token: str | None) -> None:
        """Stores `token` under `key`; an empty or None token deletes it."""
        if not token:
            self.delete(key)
            return
        if self._keyring is not None:
            self._keyring.set_password(SERVICE, key, token)
            return
        with self._lock:
            data = self._read()
            data[key] = token
            self._write(data)

    def delete(self, key: str) -> None:
        if self._keyring is not None:
            try:
                self._keyring.delete_password(SERVICE, key)
            except Exception:  # keyring raises PasswordDeleteError when absent
                pass
            return
        with self._lock:
            data = self._read()
            if data.pop(key, None) is not None:
                self._write(data)

    # -- the file fallback ---------------------------------------------------------------

    def _read(self) -> dict[str, str]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        if st.st_mode & 0o077:   # someone loosened it: tighten before trusting it
            os.chmod(self.path, 0o600)
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("token file %s is unreadable (%s); starting empty", self.path, exc)
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _write(self, data: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
