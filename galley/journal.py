"""The journal every day-2 operation shares: what it did so far, node by node, kept in the
operator's directory of the cluster (`operator_dir`, beside the admin credential)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from galley.holder import alive_here, is_this_process, this_run


def operator_dir(data) -> Path:
    """Where the operator's files of ``data.cluster_name`` live (credentials, journals)."""
    base = data.get("galley_config_dir") or "~/.config/galley"
    return Path(base).expanduser() / data.cluster_name


class JournalError(Exception):
    """A journal refuses the run (nothing was changed)."""


class Journal:
    """What a day-2 operation did so far, per node: written after every step, replaced
    atomically and synced, so a run killed at any point leaves the last step recorded.

    ``{"target", "status", "started", "holder", ..., "nodes": {name: {...}}}``: a run is
    refused while another is recorded unfinished, named as running while its holder
    (`galley.holder`) lives, as interrupted once it is gone; ``--resume`` continues an
    interrupted one.
    """

    def __init__(self, path: Path, data: dict) -> None:
        self.path = path
        self.data = data

    @classmethod
    def start(cls, path: Path, target: str, resume: bool, what: str = "rollout") -> Journal:
        """A new journal, or with ``resume`` the unfinished one for the same target; ``what``
        names the operation in messages."""
        try:
            old = json.loads(path.read_text()) if path.exists() else None
        except ValueError as exc:
            raise JournalError(
                f"the {what} journal {path} is not valid JSON ({exc}): inspect it, then remove "
                "it to start over"
            ) from None
        if old is not None:
            cls._refuse_if_alive(old, path, what)
        if resume:
            if old is None:
                raise JournalError(f"--resume: there is no {what} journal at {path}")
            if old.get("target") != target:
                raise JournalError(
                    f"--resume: the journal {path} is a {what} to {old.get('target')}, not {target}"
                )
            return cls(path, old | {"status": "running"} | this_run())
        if old is not None and old.get("status") in ("running", "interrupted"):
            raise JournalError(
                f"an interrupted {what} to {old.get('target')} is recorded in {path}: "
                "rerun with --resume, or remove the file to start over"
            )
        started = datetime.now(UTC).isoformat(timespec="seconds")
        return cls(
            path,
            {"target": target, "status": "running", "started": started, "nodes": {}} | this_run(),
        )

    @staticmethod
    def _refuse_if_alive(old: dict, path: Path, what: str) -> None:
        """A journal still running under a live holder (another process) belongs to that run:
        refuse, naming it. Only a run whose holder is gone is interrupted."""
        if old.get("status") != "running" or is_this_process(old) or not alive_here(old):
            return
        raise JournalError(
            f"a {what} to {old.get('target')} is running now: {old['holder']}, started "
            f"{old.get('started')} (journal {path}); wait for it to finish"
        )

    @staticmethod
    def recorded(path: Path) -> dict:
        """What the journal at ``path`` holds now ({} when there is none or it is not JSON)."""
        try:
            old = json.loads(path.read_text()) if path.exists() else {}
        except ValueError:
            return {}
        return old if isinstance(old, dict) else {}

    @classmethod
    def continue_or_start(cls, path: Path, target: str, what: str) -> Journal:
        """For commands that finish their own unfinished run when run again (no ``--resume``):
        the unfinished journal of the same ``target`` is continued, an unfinished one of
        another target refuses the run, anything else starts afresh."""
        old = cls.recorded(path)
        if old.get("status") in ("running", "interrupted") and old.get("target") != target:
            raise JournalError(
                f"an unfinished {what} ({old.get('target')}) is recorded in {path}: run it "
                "again to finish it first"
            )
        resume = old.get("target") == target and old.get("status") != "finished"
        return cls.start(path, target, resume, what=what)

    def node(self, name: str) -> dict:
        """The record of one node (created empty)."""
        return self.data["nodes"].setdefault(name, {})

    def done(self) -> list[str]:
        """Nodes finished in this rollout."""
        return [
            name for name, record in self.data["nodes"].items() if record.get("state") == "done"
        ]

    def update(self, name: str | None = None, **values: Any) -> None:
        """Set ``values`` on node ``name`` (or the run, when None) and save."""
        (self.node(name) if name else self.data).update(values)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        new = self.path.with_name(self.path.name + ".galley-new")
        with new.open("w") as handle:
            handle.write(json.dumps(self.data, indent=2, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(new, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
