"""A copy of Tune's experiment state that a full disk cannot spoil.

Tune rewrites ``experiment_state-*.json`` in place; when the disk fills up during that write the
file is left cut short, and ``Tuner.restore`` then knows none of the sweep's trials. While a sweep
runs, :class:`StateKeeper` copies the file every few seconds, whenever it reads as whole JSON, to
``<name>.ct-good`` (a temporary file and a rename: a failed copy leaves the last good one); a
resume first puts a good copy back over a damaged file (:func:`restore_state`).
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from ct_core.files import atomic_write_text

__all__ = ["GOOD", "StateKeeper", "backup_state", "restore_state"]

GOOD = ".ct-good"
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
    """Copy each whole ``experiment_state-*.json`` of ``experiment`` to ``<name>.ct-good``."""
    for state in Path(experiment).glob("experiment_state-*.json"):
        text = _whole(state)
        good = state.with_name(state.name + GOOD)
        if text is None or (good.exists() and _whole(good) == text):
            continue
        try:
            atomic_write_text(good, text)
        except OSError:
            pass  # a full disk: the last good copy stays


def restore_state(experiment: Path) -> list[Path]:
    """Put the good copy back over each damaged experiment state; return the files restored."""
    restored = []
    for good in Path(experiment).glob(f"experiment_state-*.json{GOOD}"):
        state = good.with_name(good.name[: -len(GOOD)])
        text = _whole(good)
        if text is not None and _whole(state) is None:
            atomic_write_text(state, text)
            restored.append(state)
            log.warning("%s was damaged; resuming from its last good copy", state.name)
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
