"""Database and cluster servers for the tests: started on 127.0.0.1 and free ports, checked, stopped by process id."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def is_loopback(address: str) -> bool:
    import ipaddress

    ip = ipaddress.ip_address(address.strip("[]"))
    return ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listeners() -> set[tuple[str, int]]:
    """Every listening TCP (address, port) on the machine (``ss -ltn``, or psutil where ss is missing)."""
    if shutil.which("ss"):
        out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout
        found = set()
        for line in out.splitlines():
            local = line.split()[3]
            address, _, port = local.rpartition(":")
            found.add((address.split("%")[0], int(port)))
        return found
    import psutil

    return {(c.laddr.ip, c.laddr.port) for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN}


def assert_loopback_only(before: set[tuple[str, int]]) -> None:
    """Fail if anything that started listening since ``before`` listens on a routable address."""
    routable = sorted((a, p) for a, p in listeners() - before if not is_loopback(a))
    assert not routable, f"a test server listens on a routable address: {routable}"


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {seconds:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    """Stop a server and its children by process group id: SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


@contextmanager
def server(command: list[str], port: int, log: Path, env: dict | None = None) -> Iterator[subprocess.Popen]:
    """Run ``command`` (which must listen on 127.0.0.1:``port``) for the duration of the block."""
    before = listeners()
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **(env or {})})
    try:
        wait_for_port(port, proc, log)
        assert_loopback_only(before)
        yield proc
    finally:
        stop(proc)


def postgres_binaries() -> Path | None:
    """The folder of PostgreSQL's server programs (Debian keeps them off PATH), or None when it is not installed."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@contextmanager
def postgres(port: int) -> Iterator[str]:
    """A throw-away PostgreSQL cluster on 127.0.0.1:``port`` (trust authentication, user ``rag``), run as the
    ``postgres`` user when this is root (PostgreSQL refuses root); yields its URL, then stops it by process id."""
    import tempfile

    bin_dir = postgres_binaries()
    assert bin_dir is not None
    data = Path(tempfile.mkdtemp(prefix="rag-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    try:
        subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "rag",
                        "--no-sync"], check=True, capture_output=True)
        command = [*as_user, str(bin_dir / "postgres"), "-D", str(data / "db"), "-h", "127.0.0.1", "-p", str(port),
                   "-k", str(data), "-c", "fsync=off", "-c", "max_connections=200"]
        with server(command, port, Path(tempfile.mkdtemp(prefix="rag-pg-log-")) / "server.log") as proc:
            try:
                yield f"postgresql://rag@127.0.0.1:{port}/postgres"
            finally:  # a fast shutdown: SIGTERM would wait for every client to disconnect
                os.killpg(proc.pid, signal.SIGINT)
                proc.wait(timeout=30)
    finally:
        shutil.rmtree(data, ignore_errors=True)
