"""The etcd writer the tests run beside every operation on etcd: no write may fail."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import IO


class Writer(threading.Thread):
    """Writes a key every 50 ms through one etcd client holding every member in ``urls``, as
    kube-apiserver does (the lab's `etcd-writer`, one gRPC connection): a write fails only if
    no member accepts it within 5 s. Setting ``urls`` points it at the members as they are."""

    def __init__(
        self,
        urls: list[str],
        cert: tuple[str, str, str],
        program: Path,
        key: str = "galley-writer",
    ):
        super().__init__(daemon=True)
        self.urls, self.cert, self.program, self.key = list(urls), cert, program, key
        self.stop = threading.Event()
        self.ok, self.failed = 0, []

    def run(self) -> None:
        sent = list(self.urls)
        tls = [f"--cert={self.cert[0]}", f"--key={self.cert[1]}", f"--cacert={self.cert[2]}"]
        with subprocess.Popen(
            [str(self.program), f"--endpoints={','.join(sent)}", f"--key-name={self.key}", *tls],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as process:
            assert process.stdin and process.stdout and process.stderr
            reader = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
            reader.start()
            while not self.stop.wait(0.2) and process.poll() is None:
                if self.urls != sent:
                    sent = list(self.urls)
                    process.stdin.write(",".join(sent) + "\n")
                    process.stdin.flush()
            process.stdin.close()
            process.wait(timeout=30)
            reader.join()
            if process.returncode:
                self.failed.append(process.stderr.read().strip() or f"exit {process.returncode}")

    def _read(self, lines: IO[str]) -> None:
        for line in lines:
            kind, _, rest = line.strip().partition(" ")
            if kind == "failed":
                self.failed.append(rest)
            elif kind == "ok":
                self.ok = int(rest)
