"""Seconds of `galley etcd snapshot` and `galley etcd restore` for an etcd database of about
100 MB, on the running lab.

`python bench/backup.py [--mb 100]` writes that much (100 KB values under `galley-bench/`)
through lab-etcd-1, then times a snapshot copied to this machine and a restore of it on every
member (apiservers stopped and started, kubelets restarted), and removes the keys again. Needs
a deployed lab (e.g. after the integration tests); it restores the lab's cluster, so run it
only when nobody else uses the lab.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from galley.etcd.etcdctl import etcdctl_command

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LOCAL = ["https://127.0.0.1:2379"]
VALUE_KB = 100


def cli(*args: str) -> float:
    """Run a console script of this virtualenv from the repository root; its seconds."""
    start = time.monotonic()
    subprocess.run([str(BIN / args[0]), *args[1:]], cwd=REPO, check=True, stdout=subprocess.PIPE)
    return time.monotonic() - start


def on_member(command: str) -> str:
    return subprocess.run(
        [str(BIN / "galley"), "lab", "ssh", "lab-etcd-1", command],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    megabytes = parser.parse_args().mb
    put = etcdctl_command(LOCAL, "put", "KEY", "VALUE").replace(" KEY VALUE", ' "$key" "$v"')
    count = megabytes * 1024 // VALUE_KB
    on_member(
        f"v=$(head -c {VALUE_KB * 768} /dev/urandom | base64 -w0); "
        f"for i in $(seq {count}); do key=galley-bench/$i; {put} >/dev/null || exit 1; done"
    )
    with tempfile.TemporaryDirectory() as directory:
        snapshot = cli("galley", "etcd", "snapshot", "inventories/lab.py", "--out", directory)
        (path,) = Path(directory).glob("*.db")
        size = path.stat().st_size / 2**20
        restore = cli("galley", "etcd", "restore", "inventories/lab.py", str(path), "--yes")
    on_member(etcdctl_command(LOCAL, "del", "--prefix", "galley-bench/") + " >/dev/null")
    print(f"etcd database snapshot: {size:.0f} MiB ({count} values of {VALUE_KB} KB)")
    print(f"galley etcd snapshot (save, check, copy, sha256)   {snapshot:6.1f} s")
    print(f"galley etcd restore (whole procedure, 3 members)   {restore:6.1f} s")


if __name__ == "__main__":
    main()
