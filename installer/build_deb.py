#!/usr/bin/env python3
"""Build musa-ops-daemon_<version>_<arch>.deb: musad in /opt/musa-ops, a systemd unit, a conffile.

Why this shape: GPU servers already carry torch (paired with torch_musa on MUSA nodes, or a
CUDA build), installed for the system Python. So the package holds a virtual environment
made with --system-site-packages: our own dependencies live inside it and win over any
system copies; torch is not bundled and comes from the host. Nothing is downloaded at
build or install time: the dependencies are copied, file by file from their RECORDs, out
of the environment running this script (the one `make install` set up and the tests ran
against), and musa-ops itself goes in as a freshly built wheel. The result is tied to one
Python minor version (the venv's), which the package's Depends names.

    .venv/bin/python installer/build_deb.py --out dist [--python /usr/bin/python3]
        [--compression xz|gzip|zstd|none] [--no-compile]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import os
import pathlib
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from pkgwheel import WheelError, build_wheel  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
PACKAGE = "musa-ops-daemon"
PREFIX = "/opt/musa-ops"
VENV = f"{PREFIX}/venv"
EXTRAS = ("daemon", "postgres")
# Provided by the host (torch_musa / CUDA builds pair with specific torch releases).
EXCLUDE = {"torch", "torch-musa", "torchvision", "torchaudio", "triton"}
MAINTAINER = "musa-ops developers <musa-ops@example.invalid>"


class BuildError(Exception):
    """A build problem, as a sentence."""


# -- what goes in ---------------------------------------------------------------------------

def dependency_closure(root: str = "musa-ops", extras=EXTRAS, exclude=EXCLUDE) -> list[md.Distribution]:
    """Installed distributions `root[extras]` needs, transitively, minus `exclude` (and root)."""
    wanted: dict[str, set[str]] = {}
    dists: dict[str, md.Distribution] = {}
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset(extras))]
    while todo:
        name, want_extras = todo.pop()
        key = canonicalize_name(name)
        if key in wanted and want_extras <= wanted[key]:
            continue
        wanted.setdefault(key, set()).update(want_extras)
        try:
            dist = dists.get(key) or md.distribution(name)
        except md.PackageNotFoundError:
            raise BuildError(f"{name} is required but not installed in {sys.prefix}: run `make install` first.") from None
        dists[key] = dist
        envs = [{"extra": e} for e in sorted(wanted[key])] + [{"extra": ""}]
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not any(req.marker.evaluate(env) for env in envs):
                continue
            if canonicalize_name(req.name) in exclude:
                continue
            todo.append((req.name, frozenset(req.extras)))
    root_key = canonicalize_name(root)
    return [d for k, d in sorted(dists.items()) if k != root_key]


def copy_distribution(dist: md.Distribution, site_packages: pathlib.Path) -> int:
    """Copy an installed distribution's files (per its RECORD) into `site_packages`; bytes copied.

    Scripts outside site-packages and byte-code caches are left out (we compile afresh)."""
    copied = 0
    for rel in dist.files or []:
        parts = pathlib.PurePosixPath(str(rel)).parts
        if not parts or parts[0] == ".." or "__pycache__" in parts or parts[-1] == "direct_url.json":
            continue
        src = pathlib.Path(dist.locate_file(rel))
        if not src.is_file():
            continue
        dst = site_packages.joinpath(*parts)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
        copied += src.stat().st_size
    return copied


_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


def _glibc_of(platform_tag: str) -> tuple[int, int] | None:
    m = re.match(r"manylinux_(\d+)_(\d+)_", platform_tag)
    if m:
        return int(m[1]), int(m[2])
    for legacy, version in _LEGACY_MANYLINUX.items():
        if platform_tag.startswith(legacy + "_"):
            return version
    return None


def glibc_floor(dists: list[md.Distribution]) -> tuple[int, int] | None:
    """The newest glibc any copied wheel needs (each wheel: the oldest of its manylinux tags)."""
    floor = None
    for dist in dists:
        tags = re.findall(r"^Tag:\s*(\S+)", dist.read_text("WHEEL") or "", re.M)
        needs = [v for t in tags for p in t.split("-")[-1].split(".") if (v := _glibc_of(p))]
        if needs:
            floor = max(floor or (0, 0), min(needs))
    return floor


def install_wheel(wheel: pathlib.Path, site_packages: pathlib.Path) -> tuple[str, dict[str, str]]:
    """Unpack a pure-Python wheel; returns (version, console scripts name -> "module:func")."""
    scripts: dict[str, str] = {}
    version = ""
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if ".data/" in name.split("/", 1)[0] + "/":
                raise BuildError(f"{wheel.name} has a .data folder ({name}); not supported")
        zf.extractall(site_packages)
        for name in zf.namelist():
            if name.endswith(".dist-info/entry_points.txt"):
                section = ""
                for line in zf.read(name).decode().splitlines():
                    line = line.strip()
                    if line.startswith("["):
                        section = line.strip("[]")
                    elif section == "console_scripts" and "=" in line:
                        key, _, value = line.partition("=")
                        scripts[key.strip()] = value.strip()
            if name.endswith(".dist-info/METADATA"):
                m = re.search(r"^Version:\s*(\S+)", zf.read(name).decode(), re.M)
                version = m[1] if m else ""
    if not version:
        raise BuildError(f"{wheel.name} has no version in its METADATA")
    return version, scripts


def console_script(python: str, target: str) -> str:
    module, _, func = target.partition(":")
    return (
        f"#!{python}\n"
        "import sys\n"
        f"from {module} import {func}\n"
        f"sys.exit({func}())\n"
    )


# -- the virtual environment ----------------------------------------------------------------

def python_version(python: str) -> tuple[int, int]:
    out = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"],
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), int(out[1])


def make_venv(venv: pathlib.Path, python: str) -> pathlib.Path:
    """`python -m venv --system-site-packages --without-pip`; returns its site-packages."""
    subprocess.run([python, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                   check=True, capture_output=True, text=True)
    # Pin the interpreter to the minor version the dependencies were built for, so a later
    # change of the system's default python3 cannot break the venv.
    major, minor = python_version(python)
    versioned = pathlib.Path(f"/usr/bin/python{major}.{minor}")
    link = venv / "bin" / "python3"
    if python.startswith("/usr/bin/") and link.is_symlink() and versioned.exists():
        link.unlink()
        link.symlink_to(versioned)
    found = list(venv.glob("lib/python3*/site-packages"))
    if len(found) != 1:
        raise BuildError(f"cannot find the site-packages of the new venv in {venv}")
    return found[0]


def relocate(venv: pathlib.Path, staged: str, final: str) -> None:
    """Replace the staging path by the installed path in the venv's text files."""
    for path in [venv / "pyvenv.cfg", *sorted((venv / "bin").iterdir())]:
        if path.is_symlink() or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if staged in text:
            path.write_text(text.replace(staged, final), encoding="utf-8")


# -- the package ----------------------------------------------------------------------------

def conffile_text() -> str:
    """/etc/musad/musad.toml: the documented sample, with the service's state folder set."""
    sample = REPO / "resources" / "musad.toml"
    text = sample.read_text(encoding="utf-8") if sample.is_file() else sample_from_defaults()
    header = (
        "# /etc/musad/musad.toml: configuration of the musad system service\n"
        "# (musa-ops-daemon package; `systemctl restart musad` after editing).\n"
        "# The unit runs `musad serve --config /etc/musad/musad.toml` as user musad;\n"
        "# state (database, tokens, models) defaults to /var/lib/musad, see [storage].\n#\n"
    )
    return header + set_state_dir(text, "/var/lib/musad")


def sample_from_defaults() -> str:
    """Every key of musad's Config with its default, commented out (used when the
    documented sample resources/musad.toml is absent)."""
    import dataclasses

    from musaops.daemon.config import Config

    def toml(value: object) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if value is None:
            return '""'
        if isinstance(value, str):
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return repr(value)

    lines = ["# musad configuration: every key with its default (uncomment to change)."]
    for section in dataclasses.fields(Config):
        lines += ["", f"# [{section.name}]"]
        for f in dataclasses.fields(section.default_factory()):  # type: ignore[misc]
            lines.append(f"# {f.name} = {toml(getattr(section.default_factory(), f.name))}")  # type: ignore[misc]
    return "\n".join(lines) + "\n"


def set_state_dir(text: str, state_dir: str) -> str:
    """Make `[storage] state_dir` explicit (the service user is not root, so musad's own
    default would be a per-user folder)."""
    lines = text.splitlines()
    out, in_storage, done = [], False, False
    for line in lines:
        stripped = line.strip()
        header = re.fullmatch(r"#?\s*\[(\w+)\]\s*(#.*)?", stripped)
        if header and not stripped.startswith("##"):
            if in_storage and not done:
                out.append(f'state_dir = "{state_dir}"')
                done = True
            in_storage = header[1] == "storage"
            if in_storage:
                line = "[storage]"
        elif in_storage and not done and re.match(r"#?\s*state_dir\s*=", stripped):
            out.append(f'state_dir = "{state_dir}"')
            done = True
            continue
        out.append(line)
    if not done:
        if not in_storage:
            out.append("\n[storage]")
        out.append(f'state_dir = "{state_dir}"')
    return "\n".join(out) + "\n"


def control_text(version: str, arch: str, py: tuple[int, int], python: str, installed_kib: int,
                 glibc: tuple[int, int] | None) -> str:
    depends = ["python3 (>= 3.10)"]
    if python.startswith("/usr/bin/"):
        depends.append(f"python{py[0]}.{py[1]}")  # the venv's interpreter
    depends.append("adduser")
    if glibc:
        depends.append(f"libc6 (>= {glibc[0]}.{glibc[1]})")
    return (
        f"Package: {PACKAGE}\n"
        f"Version: {version}\n"
        f"Architecture: {arch}\n"
        f"Maintainer: {MAINTAINER}\n"
        f"Installed-Size: {installed_kib}\n"
        f"Depends: {', '.join(depends)}\n"
        # A C compiler lets a CPU-only node build the engine's bf16 kernels on first use
        # (daemon/engine/cpu_forward.py, cpu_kernels.py); without one it runs torch's.
        "Suggests: gcc\n"
        "Section: net\n"
        "Priority: optional\n"
        "Description: musad, the musa-ops node daemon for LLM serving on GPU servers\n"
        " musad runs a continuously batched PyTorch inference engine on Moore Threads\n"
        " MUSA GPUs (torch_musa, MTML), NVIDIA GPUs (CUDA, NVML) or the CPU, keeps a\n"
        " model repository, and serves gRPC control, telemetry, inference and audit\n"
        " APIs plus Prometheus /metrics. It runs as the systemd service musad.\n"
        " .\n"
        " With gcc present, a CPU-only node compiles faster bf16 kernels on first use.\n"
        " .\n"
        " torch is not bundled: the daemon uses the torch (and torch_musa) installed\n"
        f" for the system's Python {py[0]}.{py[1]}; everything else lives in {VENV}.\n"
    )


def maintainer_scripts() -> dict[str, str]:
    return {name: (HERE / "debian" / name).read_text(encoding="utf-8")
            for name in ("postinst", "prerm", "postrm")}


def write(path: pathlib.Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)


def md5sums(root: pathlib.Path) -> str:
    lines = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] == "DEBIAN" or path.is_symlink() or not path.is_file():
            continue
        lines.append(f"{hashlib.md5(path.read_bytes()).hexdigest()}  {rel.as_posix()}")
    return "\n".join(lines) + "\n"


def normalise_modes(root: pathlib.Path) -> None:
    """Directories 0755, files 0644 or 0755 (executable bit kept): umask-independent."""
    for path in root.rglob("*"):
        if path.is_symlink():
            continue
        if path.is_dir():
            path.chmod(0o755)
        else:
            executable = path.stat().st_mode & stat.S_IXUSR
            path.chmod(0o755 if executable else 0o644)


def build(out_dir: pathlib.Path, python: str = "/usr/bin/python3", compression: str = "xz",
          compile_bytecode: bool = True, work: pathlib.Path | None = None) -> pathlib.Path:
    """Build the .deb into out_dir; returns its path."""
    for tool in ("dpkg-deb", "dpkg"):
        if shutil.which(tool) is None:
            raise BuildError(f"{tool} is not installed (apt-get install dpkg)")
    if not pathlib.Path(python).exists():
        raise BuildError(f"the target interpreter {python} does not exist; pass --python")
    py = python_version(python)
    if py != sys.version_info[:2]:
        raise BuildError(
            f"{python} is Python {py[0]}.{py[1]} but the dependencies come from this environment's "
            f"Python {sys.version_info[0]}.{sys.version_info[1]}; build with a matching --python "
            "(compiled dependencies are tied to one Python version)."
        )
    if py < (3, 10):
        raise BuildError(f"musad needs Python >= 3.10; {python} is {py[0]}.{py[1]}")
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()

    scratch = pathlib.Path(tempfile.mkdtemp(prefix="musa-deb-", dir=work))
    try:
        root = scratch / "root"
        venv = root / VENV.lstrip("/")
        site = make_venv(venv, python)
        dists = dependency_closure()
        for dist in dists:
            copy_distribution(dist, site)
        try:
            wheel = build_wheel(scratch / "wheel")
        except WheelError as exc:
            raise BuildError(str(exc)) from None
        version, scripts = install_wheel(wheel, site)
        # One distribution holds daemon and console; the console (Qt) has no place on a server.
        shutil.rmtree(site / "musaops" / "app", ignore_errors=True)
        if "musad" not in scripts:
            raise BuildError("the musa-ops wheel declares no `musad` console script")
        write(venv / "bin" / "musad", console_script(f"{VENV}/bin/python", scripts["musad"]), 0o755)
        relocate(venv, str(venv), VENV)

        libexec = root / PREFIX.lstrip("/") / "libexec"
        ready = (HERE / "musad-ready").read_text(encoding="utf-8")
        write(libexec / "musad-ready", ready.replace("@PYTHON@", f"{VENV}/bin/python"), 0o755)
        (root / "usr" / "bin").mkdir(parents=True)
        (root / "usr" / "bin" / "musad").symlink_to(f"{VENV}/bin/musad")
        write(root / "etc" / "musad" / "musad.toml", conffile_text())
        write(root / "lib" / "systemd" / "system" / "musad.service",
              (HERE / "musad.service").read_text(encoding="utf-8"))
        doc = root / "usr" / "share" / "doc" / PACKAGE
        write(doc / "README.md", (HERE / "README.md").read_text(encoding="utf-8"))
        write(doc / "copyright",
              "musa-ops: Copyright musa-ops developers. License: Apache-2.0\n"
              "(see /usr/share/common-licenses/Apache-2.0).\n"
              f"Third-party Python packages in {VENV} keep their own licenses (see their\n"
              ".dist-info folders).\n")
        normalise_modes(root)
        if compile_bytecode:
            # Compiled with the target interpreter, paths as installed; dpkg keeps the mtimes
            # the .pyc files check against. The service cannot write caches into /opt.
            subprocess.run([python, "-m", "compileall", "-q", "-j", "0", "-s", str(root), "-p", "/",
                            str(venv / "lib")], check=True)

        installed_kib = sum(p.lstat().st_size for p in root.rglob("*")) // 1024 + 1
        debian = root / "DEBIAN"
        write(debian / "control", control_text(version, arch, py, python, installed_kib, glibc_floor(dists)))
        write(debian / "conffiles", "/etc/musad/musad.toml\n")
        for name, text in maintainer_scripts().items():
            write(debian / name, text, 0o755)
        write(debian / "md5sums", md5sums(root))

        out_dir.mkdir(parents=True, exist_ok=True)
        deb = out_dir / f"{PACKAGE}_{version}_{arch}.deb"
        proc = subprocess.run(
            ["dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build", str(root), str(deb)],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise BuildError(f"dpkg-deb failed:\n{proc.stdout}{proc.stderr}")
        return deb
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="dist", help="folder for the .deb (default dist)")
    p.add_argument("--python", default="/usr/bin/python3",
                   help="the target's interpreter the venv is made from (default /usr/bin/python3)")
    p.add_argument("--compression", default="xz", choices=("xz", "gzip", "zstd", "none"))
    p.add_argument("--no-compile", action="store_true", help="skip byte-compiling (faster, for tests)")
    args = p.parse_args(argv)
    try:
        deb = build(pathlib.Path(args.out), args.python, args.compression, not args.no_compile)
    except BuildError as exc:
        print(f"build_deb: {exc}", file=sys.stderr)
        return 2
    print(deb)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
