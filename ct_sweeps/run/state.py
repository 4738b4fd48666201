"""A copy of Tune's experiment state that a full disk cannot spoil.

Tune rewrites ``experiment_state-*.json`` in place; when the disk fills up during that write the
file is left cut short, and ``Tuner.restore`` then knows none of the sweep's trials. While a sweep
runs, :class:`StateKeeper` copies the file every few seconds, whenever it reads as whole JSON, to
``.ct-good/`` with the searcher state written beside it (each copy a temporary file and a
rename: a failed copy leaves the last good one); a resume first puts the good copies back when
the state is damaged (:func:`restore_state`).
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from ct_core.files import atomic_save

__all__ = ["GOOD", "StateKeeper", "backup_state", "restore_state"]

GOOD = ".ct-good"
"""The folder (inside the experiment folder) that holds the last good copy."""
log = logging.getLogger("ct_sweeps")


def _whole(path: Path) -> str | None:
    """The text of ``path`` if it is complete JSON, else ``None``."""
    try:
        text = path.read_text()
        json.loads(text)
    except (OSError, ValueError):
        return None
    return text


def backup_state(experiment: Path) -> None:
    """Copy Tune's state files to ``experiment/.ct-good/`` together, at a moment when every
    ``experiment_state-*.json`` reads as whole JSON (the searcher state written beside it is
    then whole too)."""
    experiment = Path(experiment)
    states = list(experiment.glob("experiment_state-*.json"))
    if not states or any(_whole(p) is None for p in states):
        return
    good = experiment / GOOD
    try:
        good.mkdir(exist_ok=True)
        # Tune's own files at the top of the folder (the experiment and searcher state, the
        # tuner): what Tuner.restore reads
        for f in sorted(experiment.iterdir()):
            if not f.is_file() or f.name[0] == ".":
                continue
            data = f.read_bytes()
            copy = good / f.name
            if not (copy.exists() and copy.read_bytes() == data):
                atomic_save(copy, lambda out, data=data: out.write(data))
    except OSError:
        pass  # a full disk: the last good copy stays


def restore_state(experiment: Path) -> list[Path]:
    """If an experiment state is damaged, put the last good copy of every state file back;
    return the files restored."""
    experiment, good = Path(experiment), Path(experiment) / GOOD
    states = list(experiment.glob("experiment_state-*.json"))
    if not good.is_dir() or all(_whole(p) is not None for p in states):
        return []
    restored = []
    for copy in sorted(good.iterdir()):
        data = copy.read_bytes()
        atomic_save(experiment / copy.name, lambda out, data=data: out.write(data))
        restored.append(experiment / copy.name)
    log.warning("Tune's experiment state was damaged; resuming from its last good copy")
    return restored


class StateKeeper:
    """Runs :func:`backup_state` every ``every_s`` seconds on a thread until :meth:`stop`."""

    def __init__(self, experiment: Path, every_s: float = 5.0) -> None:
        self.experiment, self.every_s = Path(experiment), every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ct-state-keeper", daemon=True)

    def start(self) -> StateKeeper:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            backup_state(self.experiment)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
