"""Packs: the settings of a grid/random sweep, planned into Tune trials before Ray starts.

The settings are drawn up front (:meth:`Space.settings`) and written with their packs to
``RUN_DIR/packs.json`` (:class:`PackBook`), which ``report``, ``resume`` and ``sync-mlflow`` read
back. Settings with the same :func:`ct_core.packability.pack_key` may share a pack, which trains
them as one vectorised computation; each still has its own row in ``results.csv`` and its own
MLflow run (:func:`unit_id`). :func:`ct_core.packability.make_packs` sizes the packs for the
trials that run at once. Optuna sweeps suggest their settings as they go: no packs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ct_sweeps.plan.space import Space, trial_config

__all__ = ["PACKS_FILE", "PackBook", "load_book", "save_packs", "setting_traits", "settings_of"]
__all__ += ["unit_id"]

PACKS_FILE = "packs.json"


def unit_id(trial_id: str, k: int, size: int) -> str:
    """The id of setting ``k`` of a trial that trains ``size`` settings: its ``results.csv`` row
    and the ``ct.trial_id`` tag of its MLflow run (the trial's own id for a pack of one)."""
    return trial_id if size == 1 else f"{trial_id}-{k:02d}"


def setting_traits(
    settings: Sequence[Mapping[str, Any]], base: Mapping[str, Any], space: Space
) -> tuple[list[float], list[Any]]:
    """Per setting: its :func:`~ct_core.packability.setting_cost` and
    :func:`~ct_core.packability.pack_key` (what :func:`~ct_core.packability.make_packs` takes)."""
    from ct_core.packability import pack_key, setting_cost

    cost: list[float] = []
    keys: list[Any] = []
    for s in settings:
        cfg = trial_config(base, space.resolve(s))
        cost.append(setting_cost(cfg))
        keys.append(pack_key(cfg))
    return cost, keys


@dataclass(frozen=True)
class PackBook:
    """A run's packs as ``packs.json`` holds them: the settings (Tune-style configs, by index)
    and each pack's members; a pack trial's config is ``{"pack": j}``."""

    settings: tuple[dict[str, Any], ...]
    packs: tuple[tuple[int, ...], ...]

    def __len__(self) -> int:
        return len(self.packs)

    def configs(self, config: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The settings a pack trial trains."""
        return [self.settings[i] for i in self.packs[int(config["pack"])]]


def settings_of(config: Mapping[str, Any], book: PackBook | None) -> list[dict[str, Any]]:
    """The settings a Tune trial trains: its pack's (grid/random), or its own config (Optuna)."""
    return book.configs(config) if book is not None else [dict(config)]


def save_packs(path: Path, book: PackBook) -> None:
    """Write ``packs.json`` (atomically): each pack's settings, by index and config."""
    doc = {
        "n_settings": len(book.settings),
        "packs": [[{"index": i, "config": dict(book.settings[i])} for i in p] for p in book.packs],
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    os.replace(tmp, path)


def load_book(path: Path) -> PackBook:
    """The :class:`PackBook` that :func:`save_packs` wrote."""
    doc = json.loads(path.read_text())
    settings: dict[int, dict[str, Any]] = {}
    packs = []
    for p in doc["packs"]:
        packs.append(tuple(int(s["index"]) for s in p))
        settings.update({int(s["index"]): s["config"] for s in p})
    return PackBook(tuple(settings[i] for i in range(len(settings))), tuple(packs))
