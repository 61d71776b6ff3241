"""The ``tritonserver`` process: where it is installed, and starting, waiting for and stopping it.

moce runs a real Triton Inference Server: a system install (NGC container, ``/opt/tritonserver``)
or the server that the ``nvidia-pytriton`` wheel bundles with its Python backend.
``moce install-tritonserver`` unpacks that wheel's server into the environment
(``<sys.prefix>/opt/tritonserver``) without installing pytriton itself, whose Python package pins
NumPy below 2. Only the Python backend is bundled, which is all a moce repository needs.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import site
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from moce.apps.triton import ServeOptions, cached_repository
from moce.errors import MoceError, one_line
from moce.outputs import MARKER, Planned, check_write, mark_folder
from moce.runtime.resolve import open_model

PYTRITON = "nvidia-pytriton==0.7.0"
SERVER_ENV = "MOCE_TRITONSERVER"
BUNDLE = Path("pytriton") / "tritonserver"
INSTALL = "moce install-tritonserver"
"""What an unpacked server's folder marker carries (:mod:`moce.outputs`)."""
LOG_FAILED = re.compile(r"failed", re.IGNORECASE)
LOG_ERROR = re.compile(r"^E\d{4} |error", re.IGNORECASE)
"""Lines of Triton's log that say what went wrong: the first that says something *failed* (a model
that would not load), else the first error (glog's ``E`` lines; on a machine without a GPU the
first of those is a harmless note about CUDA)."""


class ServerError(MoceError):
    """The Triton server cannot be found, installed, started or reached."""


@dataclass(frozen=True)
class ServerInstall:
    """A ``tritonserver`` binary, its backends folder and the environment it needs."""

    binary: Path
    backends: Path
    env: dict[str, str] = field(default_factory=dict)


def bundled_root() -> Path:
    """Where :func:`install_server` unpacks the bundled server: inside the running environment."""
    return Path(sys.prefix) / "opt" / "tritonserver"


def install_server(dest: Path | None = None) -> Path:
    """Download the ``nvidia-pytriton`` wheel (no dependencies) and unpack its server, its libraries
    and the Python backend stub built for this Python into ``dest``; returns the binary's path."""
    dest = Path(dest or bundled_root())
    check_install_folder(dest)
    with tempfile.TemporaryDirectory() as tmp:
        pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", tmp, PYTRITON]
        done = subprocess.run(pip, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("nvidia_pytriton-*.whl"))
        if done.returncode or not wheels:
            raise ServerError(f"pip could not download {PYTRITON}: {(done.stderr or done.stdout).strip()[-400:]}")
        staging = Path(tempfile.mkdtemp(prefix=".tritonserver.", dir=_parent(dest)))
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                members = [
                    m for m in wheel.namelist() if m.startswith((f"{BUNDLE.as_posix()}/", "nvidia_pytriton.libs/"))
                ]
                wheel.extractall(staging, members)
            _place_stub(staging)
            mark_folder(staging, INSTALL)
            shutil.rmtree(dest, ignore_errors=True)
            staging.rename(dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return dest / BUNDLE / "bin" / "tritonserver"


def check_install_folder(dest: Path) -> None:
    """Refuse a folder to unpack into that holds anything but an earlier unpacked server (marked,
    or as moce 0.7.5 and earlier left it: the bundle's two folders alone)."""
    earlier = {"pytriton", "nvidia_pytriton.libs"}
    if dest.is_dir() and not (dest / MARKER).exists() and {p.name for p in dest.iterdir()} <= earlier:
        return
    check_write(Planned(dest, "-o/--output", INSTALL, folder=True))


def _parent(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest.parent


def _place_stub(root: Path) -> None:
    """The Python backend runs ``triton_python_backend_stub`` from its own folder: copy the one
    built for this interpreter's version there, and make the binaries executable."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / BUNDLE / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerError(f"{PYTRITON} has no Python backend stub for Python {version}")
    target = root / BUNDLE / "backends" / "python" / stub.name
    shutil.copy2(stub, target)
    for binary in (target, root / BUNDLE / "bin" / "tritonserver"):
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def find_server(explicit: Path | None = None) -> ServerInstall:
    """``explicit``, else ``$MOCE_TRITONSERVER``, else the bundled server, else ``tritonserver`` on PATH."""
    given = explicit or (Path(os.environ[SERVER_ENV]) if os.environ.get(SERVER_ENV) else None)
    if given is not None:
        if not Path(given).is_file():
            raise ServerError(f"{given}: no tritonserver binary there")
        return _install_at(Path(given))
    bundled = bundled_root() / BUNDLE / "bin" / "tritonserver"
    if bundled.is_file():
        return _install_at(bundled)
    on_path = shutil.which("tritonserver")
    if on_path:
        return _install_at(Path(on_path))
    raise ServerError(
        "no tritonserver found: run `moce install-tritonserver` (unpacks the server bundled in "
        f"{PYTRITON} from PyPI), pass --tritonserver PATH, or set ${SERVER_ENV}"
    )


def _install_at(binary: Path) -> ServerInstall:
    """A binary inside an unpacked pytriton bundle needs its bundled libraries and libpython."""
    root = binary.resolve().parent.parent
    libs = root.parent.parent / "nvidia_pytriton.libs"
    env = {}
    if libs.is_dir():
        libpython = sysconfig.get_config_var("LIBDIR") or ""
        paths = [str(libs), libpython, os.environ.get("LD_LIBRARY_PATH", "")]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in paths if p)
    return ServerInstall(binary, root / "backends", env)


def moce_pythonpath() -> str:
    """Folders that make ``import moce`` (and its dependencies) work in the Python backend's interpreter."""
    folders = [*site.getsitepackages(), str(Path(__file__).resolve().parents[2])]  # the folder holding moce/
    return os.pathsep.join(dict.fromkeys(folders))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002

    @classmethod
    def free(cls, host: str = "127.0.0.1") -> Ports:
        return cls(free_port(host), free_port(host), free_port(host))


class TritonServer:
    """A running ``tritonserver`` on one repository; a context manager that stops it on exit.

    Started in its own process group, so stopping it also ends the backend stubs it spawned.
    """

    def __init__(
        self,
        repository: Path,
        install: ServerInstall,
        host: str = "127.0.0.1",
        ports: Ports | None = None,
        exit_timeout_s: int = 30,
    ) -> None:
        self.repository, self.install, self.host = Path(repository), install, host
        self.ports = ports or Ports()
        self.exit_timeout_s = exit_timeout_s  # how long a stopping server waits for open requests
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.log_path = self.repository.parent / f"{self.repository.name}.tritonserver.{stamp}.{os.getpid()}.log"
        self.process: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports.grpc}"

    def command(self) -> list[str]:
        return [
            str(self.install.binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={self.install.backends}",
            f"--http-address={self.host}",
            f"--http-port={self.ports.http}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.ports.grpc}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.ports.metrics}",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            "--exit-on-error=true",
            "--strict-readiness=true",
        ]

    def start(self, timeout_s: float = 120.0) -> TritonServer:
        env = {**os.environ, **self.install.env, "MOCE_PYTHONPATH": moce_pythonpath()}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.wait_ready(timeout_s)
        return self

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ServerError(f"tritonserver exited with code {self.process.returncode}: {self.log_summary()}")
            if self.ready():
                return
            time.sleep(0.2)
        self.stop()
        raise ServerError(f"tritonserver was not ready within {timeout_s:g} s: {self.log_summary()}")

    def log_summary(self) -> str:
        """What went wrong, for a one-line error: the log's first error line (its last line where
        none says error), then the log's path."""
        try:
            text = [line.strip() for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return f"(no log at {self.log_path})"
        last = text[-1] if text else "(empty log)"
        first_error = next((line for line in text if LOG_ERROR.search(line)), last)
        first = next((line for line in text if LOG_FAILED.search(line)), first_error)
        return f"{one_line(first)[:400]} (log: {self.log_path})"

    def stop(self) -> int | None:
        """SIGTERM (Triton finishes open requests, unloads the models and exits), then SIGKILL to the
        whole group if it is still there well after its exit timeout."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(self.exit_timeout_s + 15)
            except subprocess.TimeoutExpired:
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait()
        _signal_group(self.process.pid, signal.SIGKILL)  # backend stubs left behind, if any
        return self.process.returncode

    def wait(self) -> int:
        assert self.process is not None
        return self.process.wait()

    def __enter__(self) -> TritonServer:
        return self if self.process is not None else self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class _Stopped(Exception):
    """Raised in the main thread by the first stop signal while serving."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def check_ports(host: str, ports: Ports) -> None:
    """Refuse, before starting, ports another process holds: the server would fail to bind while an
    old server on them answered the readiness check."""
    for name, port in (("--http-port", ports.http), ("--grpc-port", ports.grpc), ("--metrics-port", ports.metrics)):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError as exc:
                raise ServerError(
                    f"{host}:{port} ({name}) is in use ({exc.strerror or exc}): another server holds it; "
                    f"stop it or choose another {name}"
                ) from None


def serve(
    model: str | Path | None,
    options: ServeOptions,
    host: str = "127.0.0.1",
    ports: Ports | None = None,
    binary: Path | None = None,
    on_ready: Callable[[TritonServer], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> int:
    """Serve ``model`` until the server exits or a signal stops it; returns the exit code (128 + the
    signal for SIGINT, SIGTERM or SIGHUP). Whatever ends it, the server's whole process group goes."""
    install = find_server(binary)
    ports = ports or Ports()
    check_ports(host, ports)
    repository = cached_repository(open_model(model, progress), options)
    server = TritonServer(repository, install, host, ports)
    with _stop_signals():
        try:
            server.start()
            if on_ready:
                on_ready(server)
            code = server.wait()
            if code != 0:
                raise ServerError(f"tritonserver exited with code {code}: {server.log_summary()}")
            return code
        except _Stopped as stopped:
            return 128 + stopped.signum
        finally:
            server.stop()


@contextmanager
def _stop_signals() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise :class:`_Stopped` once (so the server is stopped on the way
    out); later ones are ignored while it stops. Main thread only; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum: int, frame: object) -> None:
        if not fired:
            fired.append(signum)
            raise _Stopped(signum)

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
