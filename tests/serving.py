"""Helpers for the service tests: a small corpus with metadata, copies of its indexes, and a live
`mbret serve` in another process on a free loopback port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mbret.client import Client

TOPICS = ("cancer risk", "brain activity", "vitamin levels", "heart disease", "vector search", "immune response")


def served_corpus(n: int = 40) -> dict[str, dict[str, Any]]:
    return {
        f"d{i}": {
            "title": f"Study {i}",
            "text": f"a study of {TOPICS[i % len(TOPICS)]} in group {i}",
            "metadata": {"year": 2000 + i % 25, "venue": ("ACL", "SIGIR")[i % 2]},
        }
        for i in range(n)
    }


def copy_index(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`mbret serve PATHS... OPTIONS` on a free port, up once /health says ready."""

    def __init__(self, paths: list[Path], *options: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        command = [sys.executable, "-m", "mbret.cli", "serve", *map(str, paths), "--port", str(self.port), *options]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.client = Client(self.url, timeout=60)
        deadline = time.monotonic() + 90
        while True:
            try:
                if self.client.health()["status"] == "ready":
                    return
            except Exception:  # noqa: BLE001 - not up yet
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"server did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.2)

    def stop(self, sig: int = signal.SIGKILL) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(90)
        self.log.close()
        return code
