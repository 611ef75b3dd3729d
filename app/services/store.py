"""The console's own SQLite store: node profiles, settings, presets and the operator log.

Lives under the platformdirs user data folder (or a path/URL given by the caller). The
`Store` API is synchronous and must not be called on the GUI thread; `StoreWorker` runs
calls on one worker thread and hands results to a callback (the Qt side marshals that
callback back to the GUI thread). Rows cross the boundary as plain dataclasses, never ORM
objects.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
from sqlalchemy import Float, Integer, String, Text, UniqueConstraint, create_engine, event, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from ..core.nodes import NodeAddress, NodeProfile, TlsFiles  # NodeProfile re-exported
from .store_worker import StoreWorker  # noqa: F401  (re-exported)
from .keyring_store import TokenVault

APP_NAME = "musa-console"


def default_db_path() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)) / "console.sqlite3"


class _Base(DeclarativeBase):
    pass


class _Profile(_Base):
    __tablename__ = "node_profiles"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    token: Mapped[str] = mapped_column(Text, default="")
    tls_ca: Mapped[str] = mapped_column(Text, default="")
    tls_cert: Mapped[str] = mapped_column(Text, default="")
    tls_key: Mapped[str] = mapped_column(Text, default="")
    use_tls: Mapped[int] = mapped_column(Integer, default=0)


class _Setting(_Base):
    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value_json: Mapped[str] = mapped_column(Text)


class _Preset(_Base):
    __tablename__ = "presets"
    __table_args__ = (UniqueConstraint("kind", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    value_json: Mapped[str] = mapped_column(Text)
    updated: Mapped[float] = mapped_column(Float)


class _LogEntry(_Base):
    __tablename__ = "operator_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[float] = mapped_column(Float, index=True)
    node: Mapped[str] = mapped_column(String(255), default="")
    action: Mapped[str] = mapped_column(String(100))
    detail: Mapped[str] = mapped_column(Text, default="")
    outcome: Mapped[str] = mapped_column(String(20), default="ok")


@dataclass(frozen=True)
class Preset:
    kind: str           # e.g. "playground"
    name: str
    value: dict
    updated: float


@dataclass(frozen=True)
class LogEntry:
    time: float
    node: str
    action: str
    detail: str
    outcome: str


class Store:
    def __init__(self, url_or_path: str | Path | None = None, vault: TokenVault | None = None) -> None:
        if url_or_path is None:
            url_or_path = default_db_path()
        url = str(url_or_path)
        if "://" not in url:
            Path(url).parent.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{url}"
        # Tokens live in the OS keyring or a 0600 file beside the database, never in it.
        self.vault = vault or TokenVault(Path(str(url_or_path)).parent if "://" not in str(url_or_path)
                                         else default_db_path().parent)
        self.engine = create_engine(url)
        if url.startswith("sqlite"):
            @event.listens_for(self.engine, "connect")
            def _pragmas(conn, _record):  # WAL: readers never block the writer
                cur = conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.close()
        _Base.metadata.create_all(self.engine)
        self._move_tokens_to_vault()

    def _move_tokens_to_vault(self) -> None:
        """Profiles saved before the vault kept their token in a column: move them out."""
        with Session(self.engine) as s, s.begin():
            for row in s.scalars(select(_Profile).where(_Profile.token != "")):
                self.vault.set(_vault_key(row.id), row.token)
                row.token = ""

    def close(self) -> None:
        self.engine.dispose()

    def startup(self) -> tuple[dict[str, Any], list[NodeProfile]]:
        """What the console needs at start: (settings, saved connections)."""
        return self.settings(), self.list_profiles()

    # --- node profiles ---------------------------------------------------------------------

    def list_profiles(self) -> list[NodeProfile]:
        with Session(self.engine) as s:
            return [_to_profile(p, self.vault) for p in s.scalars(select(_Profile).order_by(_Profile.id))]

    def save_profile(self, profile: NodeProfile) -> NodeProfile:
        a = profile.address
        problem = a.problem()
        if problem:
            raise ValueError(problem)
        with Session(self.engine) as s, s.begin():
            row = s.get(_Profile, profile.id) if profile.id else None
            if row is None:
                row = _Profile()
                s.add(row)
            row.name, row.host, row.port = a.name, a.host, int(a.port)
            row.token = ""
            tls = a.tls
            row.use_tls = int(tls is not None)
            row.tls_ca, row.tls_cert, row.tls_key = (tls.ca, tls.cert, tls.key) if tls else ("", "", "")
            s.flush()
            self.vault.set(_vault_key(row.id), a.token or "")
            return _to_profile(row, self.vault)

    def delete_profile(self, profile_id: int) -> bool:
        with Session(self.engine) as s, s.begin():
            row = s.get(_Profile, profile_id)
            if row is None:
                return False
            s.delete(row)
            self.vault.delete(_vault_key(profile_id))
            return True

    # --- settings --------------------------------------------------------------------------

    def get_setting(self, key: str, default: Any = None) -> Any:
        with Session(self.engine) as s:
            row = s.get(_Setting, key)
            return json.loads(row.value_json) if row else default

    def settings(self) -> dict[str, Any]:
        with Session(self.engine) as s:
            return {r.key: json.loads(r.value_json) for r in s.scalars(select(_Setting))}

    def set_setting(self, key: str, value: Any) -> None:
        with Session(self.engine) as s, s.begin():
            s.merge(_Setting(key=key, value_json=json.dumps(value)))

    # --- presets ---------------------------------------------------------------------------

    def list_presets(self, kind: str) -> list[Preset]:
        with Session(self.engine) as s:
            rows = s.scalars(select(_Preset).where(_Preset.kind == kind).order_by(_Preset.name))
            return [Preset(r.kind, r.name, json.loads(r.value_json), r.updated) for r in rows]

    def save_preset(self, kind: str, name: str, value: dict) -> Preset:
        if not name.strip():
            raise ValueError("A preset needs a name.")
        now = time.time()
        with Session(self.engine) as s, s.begin():
            row = s.scalars(select(_Preset).where(_Preset.kind == kind, _Preset.name == name)).first()
            if row is None:
                row = _Preset(kind=kind, name=name)
                s.add(row)
            row.value_json, row.updated = json.dumps(value), now
        return Preset(kind, name, value, now)

    def delete_preset(self, kind: str, name: str) -> bool:
        with Session(self.engine) as s, s.begin():
            row = s.scalars(select(_Preset).where(_Preset.kind == kind, _Preset.name == name)).first()
            if row is None:
                return False
            s.delete(row)
            return True

    # --- local operator log ----------------------------------------------------------------

    def log(self, action: str, node: str = "", detail: str = "", outcome: str = "ok") -> None:
        with Session(self.engine) as s, s.begin():
            s.add(_LogEntry(time=time.time(), node=node, action=action, detail=detail,
                            outcome=outcome))

    def recent_log(self, limit: int = 200) -> list[LogEntry]:
        with Session(self.engine) as s:
            rows = s.scalars(select(_LogEntry).order_by(_LogEntry.id.desc()).limit(limit))
            return [LogEntry(r.time, r.node, r.action, r.detail, r.outcome) for r in rows]

    def query_log(self, since: float = 0, until: float = 0, action: str = "", outcome: str = "",
                  before_id: int = 0, limit: int = 200) -> list[tuple[int, LogEntry]]:
        """The operator log newest first, filtered, paged by id (rows with id < before_id)."""
        q = select(_LogEntry)
        if since:
            q = q.where(_LogEntry.time >= since)
        if until:
            q = q.where(_LogEntry.time < until)
        if action:
            q = q.where(_LogEntry.action == action)
        if outcome:
            q = q.where(_LogEntry.outcome == outcome)
        if before_id:
            q = q.where(_LogEntry.id < before_id)
        with Session(self.engine) as s:
            rows = s.scalars(q.order_by(_LogEntry.id.desc()).limit(limit))
            return [(r.id, LogEntry(r.time, r.node, r.action, r.detail, r.outcome)) for r in rows]


def _vault_key(profile_id: int) -> str:
    return f"profile-{profile_id}"


def _to_profile(p: _Profile, vault: TokenVault) -> NodeProfile:
    tls = TlsFiles(p.tls_ca, p.tls_cert, p.tls_key) if p.use_tls else None
    return NodeProfile(p.id, NodeAddress(p.host, p.port, p.name, vault.get(_vault_key(p.id)) or None, tls))
