"""musa-console: the desktop console's command line.

    musa-console [--connect HOST:PORT ...] [--token-file F] [--tls-ca F [--tls-cert F --tls-key F]]
                 [--theme light|dark] [--data-dir DIR]
                 [--screenshot PATH [--view VIEW] [--after S]]

--screenshot renders the main window offscreen after --after seconds, saves a PNG and
exits 0 (saved connections are not loaded, so the picture shows exactly --connect).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import NoReturn

_T0 = time.perf_counter()

# Garbage collection in the console process. Telemetry back-fill turns every node's missed
# history into many small tracked objects (a Snapshot is ~13: itself, host, one per device
# and model, two tuples) that live for a batch, until the GUI thread has copied them into the
# rings. With CPython's defaults (700, 10, 10) most of them survive a young collection while
# their batch waits, get promoted, and push full collections: while 200 nodes back-filled,
# tests/benchmarks/bench_console.py (--default-gc) counted ~3,000 collections, 23 of them
# full, of up to 615 ms, 5.0 s in all, each holding the GIL and so stalling the GUI thread.
# After start-up, (1) gc.freeze() moves what start-up built (modules, Qt wrappers, the
# window) out of the collector's reach, so a full collection walks only what came later, and
# (2) a larger young-generation threshold makes young collections rarer, so fewer
# short-lived samples are caught alive and promoted. With both, two runs: 22 and 32
# collections, none full, the longest 303 and 481 ms (generation 1; wall time on a busy
# 2-core machine), 0.74 and 1.1 s in all. (10_000, 10, 10) gave 123, the longest 256 ms,
# 1.7 s; (20_000, 5, 10) 26, 261 ms, 1.1 s: within the noise. Reference counting still frees
# samples at once; only cycles wait longer. The benchmark calls this function too.
GC_THRESHOLDS = (20_000, 20, 10)


def tune_gc() -> None:
    """Freezes what start-up built and raises the young-generation threshold (see above)."""
    import gc
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def build_parser() -> argparse.ArgumentParser:
    from .qt.main_window import VIEW_KEYS   # the one list of views
    p = argparse.ArgumentParser(prog="musa-console", description="Desktop console for musad nodes.")
    p.add_argument("--connect", action="append", default=[], metavar="HOST:PORT",
                   help="connect to a node for this session (repeatable)")
    p.add_argument("--token-file", help="file holding the bearer token for --connect nodes "
                   "(default: $MUSA_OPS_TOKEN)")
    p.add_argument("--tls-ca", help="CA certificate (PEM) for --connect nodes; enables TLS")
    p.add_argument("--tls-cert", help="client certificate (PEM) for mTLS")
    p.add_argument("--tls-key", help="client private key (PEM) for mTLS")
    p.add_argument("--theme", choices=("light", "dark"), help="colour theme (default: saved, else light)")
    p.add_argument("--data-dir", help="folder for the console's SQLite store "
                   "(default: the platform's user data folder; env MUSA_CONSOLE_DATA_DIR)")
    p.add_argument("--screenshot", metavar="PATH", help="render offscreen, save a PNG, exit")
    p.add_argument("--view", choices=VIEW_KEYS, default="fleet", help="view to show first")
    p.add_argument("--after", type=float, default=3.0, metavar="SECONDS",
                   help="with --screenshot: wait this long before rendering (default 3)")
    p.add_argument("--size", default="1280x800",
                   help="window size WxH (default 1280x800, at least 1024x640)")
    p.add_argument("--first-paint", action="store_true", help=argparse.SUPPRESS)
    return p


def _fail(sentence: str) -> NoReturn:
    """One sentence on stderr, exit 2: a mistake the user can fix, never a traceback."""
    print(f"musa-console: {sentence}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def display_problem(env: dict[str, str] | None = None) -> str:
    """Why no window can be opened here ("" if it can), checked before Qt starts: when Qt
    finds no usable platform plugin it aborts the process with a page of plugin advice, which
    `make run` used to swallow. Names the missing piece: the display, or the system library
    the X11 (xcb) plugin cannot load."""
    env = os.environ if env is None else env
    platform = env.get("QT_QPA_PLATFORM", "")
    if not sys.platform.startswith("linux") or platform.split(":")[0] not in ("", "xcb", "wayland"):
        return ""
    if not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        return ("no display to open a window on (DISPLAY and WAYLAND_DISPLAY are unset): run it "
                "in a desktop session or with ssh -X, or render headless with --screenshot PATH")
    if platform.startswith("wayland") or (not platform and env.get("WAYLAND_DISPLAY")):
        return ""
    display = env.get("DISPLAY", "")
    if display.startswith(":") and not Path(f"/tmp/.X11-unix/X{display[1:].split('.')[0]}").exists():
        return f"no X server answers on DISPLAY={display} (no /tmp/.X11-unix socket for it)"
    import ctypes
    from importlib.util import find_spec
    spec = find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return "PySide6 is not installed (pip install -e '.[console]')"
    plugin = Path(list(spec.submodule_search_locations)[0]) / "Qt/plugins/platforms/libqxcb.so"
    if not plugin.is_file():
        return ""
    try:
        ctypes.CDLL(str(plugin))
    except OSError as e:
        missing = str(e).split(":")[0].strip() if ": cannot open shared object" in str(e) else str(e)
        return (f"Qt's X11 plugin cannot load the system library {missing}: install the Qt xcb "
                "libraries (Debian/Ubuntu: sudo apt-get install libxcb-cursor0 libxkbcommon-x11-0 "
                "libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 libegl1)")
    return ""


def _addresses(args: argparse.Namespace):
    from .core.nodes import TlsFiles, parse_address
    token = None
    if args.token_file:
        try:
            token = Path(args.token_file).expanduser().read_text(encoding="utf-8").strip() or None
        except OSError as e:
            raise SystemExit(f"musa-console: cannot read the token file {args.token_file}: {e.strerror}")
    else:
        token = os.environ.get("MUSA_OPS_TOKEN", "").strip() or None   # as the issue asks
    if (args.tls_cert or args.tls_key) and not args.tls_ca:
        raise SystemExit("musa-console: --tls-cert/--tls-key need --tls-ca")
    tls = TlsFiles(args.tls_ca, args.tls_cert or "", args.tls_key or "") if args.tls_ca else None
    out = []
    for text in args.connect:
        try:
            out.append(parse_address(text, token=token, tls=tls))
        except ValueError as e:
            raise SystemExit(f"musa-console: {e}")
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    addresses = _addresses(args)
    if args.screenshot or args.first_paint:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise SystemExit(f"musa-console: --size must look like 1280x800, not {args.size!r}")
    from .qt.sizes import MIN_HEIGHT, MIN_WIDTH
    if width < MIN_WIDTH or height < MIN_HEIGHT:
        _fail(f"--size {width}x{height} is smaller than the console's minimum "
              f"{MIN_WIDTH}x{MIN_HEIGHT}.")
    problem = display_problem()
    if problem:
        _fail(f"cannot open a window: {problem}.")

    from PySide6.QtCore import QEvent, QObject, QTimer
    from PySide6.QtWidgets import QApplication

    from .qt.bridge import HubBridge
    from .qt.main_window import MainWindow
    from .services.node_hub import NodeHub
    from .services.operator_log import OperatorLog
    from .services.store_worker import StoreWorker

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("musa-console")
    app.setOrganizationName("musa-ops")

    data_dir = args.data_dir or os.environ.get("MUSA_CONSOLE_DATA_DIR")

    def open_store():  # runs on the store's worker thread: SQLAlchemy loads off the GUI thread
        from .services.store import Store, default_db_path
        return Store(Path(data_dir) / "console.sqlite3" if data_dir else default_db_path())

    store = StoreWorker(open_store, paused=True)   # resumed after the first paint

    bridge = HubBridge()
    hub = NodeHub(bridge, oplog=OperatorLog(store))
    hub.start()
    window = MainWindow(hub, bridge, store, theme=args.theme or "light")
    window.resize(width, height)
    for address in addresses:
        window.connect_address(address)
    window.show_view(args.view)

    if not args.screenshot and not args.first_paint:
        def loaded(result, error):
            if error:
                window.invoke(window.sb_message.setText, f"{error} (connections are not saved)")
            else:
                window.invoke(apply_saved, *result)

        def apply_saved(settings, profiles):
            window.settings.update(settings)
            if settings.get("alert_thresholds"):
                from .core.alerts import AlertThresholds
                window.state.set_thresholds(AlertThresholds(**settings["alert_thresholds"]))
            if not args.theme and settings.get("theme") in ("light", "dark"):
                window.apply_theme(settings["theme"])
            window.load_profiles(profiles)

        store.submit("startup", done=loaded)

    exit_code = [0]

    class _AfterFirstPaint(QObject):
        """Resumes the store worker once the window has painted (see StoreWorker)."""

        def eventFilter(self, obj, event):
            if event.type() == QEvent.Type.Paint:
                obj.removeEventFilter(self)
                QTimer.singleShot(0, store.resume)
                QTimer.singleShot(0, tune_gc)
            return False
    after_paint = _AfterFirstPaint(window)
    window.installEventFilter(after_paint)

    if args.first_paint:
        class _FirstPaint(QObject):
            def eventFilter(self, obj, event):
                if event.type() == QEvent.Type.Paint:
                    print(f"first-paint {time.perf_counter() - _T0:.3f} cpu={time.process_time():.3f} "
                          f"torch={'torch' in sys.modules}", flush=True)
                    QTimer.singleShot(0, app.quit)
                    obj.removeEventFilter(self)
                return False
        painter_watch = _FirstPaint(window)
        window.installEventFilter(painter_watch)

    if args.screenshot:
        def shoot():
            if args.view == "node":
                if window.state.order:
                    window.open_node(window.state.order[0])
                window.node_view.panel.redraw(force=True)
            window.fleet_view.model.flush()   # every row, not the share a timer tick shows
            app.processEvents()
            path = Path(args.screenshot)
            path.parent.mkdir(parents=True, exist_ok=True)
            if not window.grab().save(str(path)):
                print(f"musa-console: could not write {path}", file=sys.stderr)
                exit_code[0] = 1
            app.quit()
        QTimer.singleShot(int(max(0.0, args.after) * 1000), shoot)

    window.show()
    try:
        app.exec()
    finally:
        window.shutdown()
        hub.stop()
        store.close()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: Qt/pyqtgraph objects destroyed in arbitrary order at exit
    # can crash PySide (the same workaround as pyqtgraph.exit()). Everything that holds
    # state (hub thread, store) is closed above.
    os._exit(exit_code[0])


if __name__ == "__main__":
    sys.exit(main())
