"""The sweep's progress on the console: one live line instead of Ray Tune's tables.

Settings done, running and failed, the best value of the search metric (over each trial's
latest value, so a setting that got worse is not shown at its earlier best), and the time
elapsed and left, from the setting-epochs trained out of all (so that packs, which finish many
settings at once, still move the line as they train). On a terminal it is a progress bar (tqdm)
on stderr; elsewhere (a log file, ``ray job logs``) the same line is printed every 30 seconds
and at the end. Everything is read from Tune's trials at each event, so a resumed sweep (whose
callbacks Tune unpickles) shows the whole sweep.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from typing import Any

from ray.tune import Callback
from tqdm import tqdm

__all__ = ["Progress"]


class Progress(Callback):
    """``units[j]``: (settings, epochs) of pack trial ``j`` (``{"pack": j}``); without packs,
    every trial is one setting of ``epochs`` epochs."""

    def __init__(
        self, n_settings: int, epochs: int, metric: str, mode: str, units: Sequence | None = None
    ):
        self.n, self.epochs, self.metric, self.mode = n_settings, epochs, metric, mode
        self.units = [tuple(u) for u in units] if units else None
        self.total = sum(n * e for n, e in self.units) if self.units else n_settings * epochs
        self.values: dict[str, float] = {}
        """Each trial's latest value of the metric (a pack's: its best live setting's)."""
        self.epoch: dict[str, float] = {}
        """Each trial's last epoch (Tune may update a trial's ``last_result`` after its
        callbacks)."""
        self._bar: Any = None
        self._t0 = self._printed = 0.0

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_bar": None}  # Tune pickles its callbacks

    def _unit(self, trial: Any) -> tuple[int, int]:
        pack = trial.config.get("pack") if self.units else None
        return self.units[int(pack)] if pack is not None else (1, self.epochs)  # type: ignore[index]

    def line(self, trials: Sequence[Any]) -> tuple[float, str]:
        """The setting-epochs trained so far and what the line says besides the bar."""
        done = running = failed = 0
        work = 0.0
        for t in trials:
            n, e = self._unit(t)
            last = t.last_result or {}
            self.note(t.trial_id, last)
            if t.status in ("TERMINATED", "ERROR"):
                alive = int(last.get("settings_alive", n)) if t.status == "TERMINATED" else 0
                done, failed, work = done + alive, failed + n - alive, work + n * e
            elif t.status == "RUNNING":
                epoch = max(self.epoch.get(t.trial_id, 0.0), float(last.get("epoch", 0)))
                running, work = running + n, work + n * min(e, epoch)
        values = [v for v in self.values.values() if math.isfinite(v)]
        best = (min if self.mode == "min" else max)(values) if values else math.nan
        best_text = f"best {self.metric} {best:.4g}" if values else ""
        return (
            work,
            f"{done}/{self.n} done, {running} running, {failed} failed  {best_text}".rstrip(),
        )

    def note(self, trial_id: str, result: dict[str, Any]) -> None:
        v = result.get(self.metric)
        if isinstance(v, int | float) and not isinstance(v, bool):
            self.values[trial_id] = float(v)

    def show(self, trials: Sequence[Any], end: bool = False) -> None:
        work, text = self.line(trials)
        now = time.monotonic()
        self._t0 = self._t0 or now
        if sys.stderr.isatty():
            if self._bar is None:
                fmt = "{desc} {percentage:3.0f}%|{bar:24}| {elapsed}<{remaining}  {postfix}"
                self._bar = tqdm(total=self.total, desc="Sweep", bar_format=fmt, leave=True)
            self._bar.n = min(work, self.total)
            self._bar.set_postfix_str(text, refresh=True)
            if end:
                self._bar.close()
        elif end or now - self._printed >= 30:
            self._printed = now
            meter = tqdm.format_meter(
                min(work, self.total),
                self.total,
                now - self._t0,
                prefix="Sweep",
                bar_format="{desc} {percentage:3.0f}% {elapsed}<{remaining}",
            )
            print(f"{meter}  {text}", file=sys.stderr, flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.show(trials)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        self.note(trial.trial_id, result)
        self.epoch[trial.trial_id] = float(result.get("epoch", 0))
        self.show(trials)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.show(trials)

    on_trial_error = on_trial_complete

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.show(trials, end=True)
