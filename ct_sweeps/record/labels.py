"""How a setting is shown in the tracker: a run name built from what the sweep varies, and only
the parameters that apply to it.

A name lists the swept values in the order of the sweep file's space, the common CT keys by
short aliases (``ecco T=25 tau=0.9 div=0.5``); a name already given in the sweep gets `` #2``,
`` #3``, ... (repeated grid samples). Parameters that a setting does not use are left out: the
generator and the CT terms of a vanilla model, the CT terms its objective leaves out, and the
``generator.*`` fields that its generator does not read (its registration says which:
``ct_core.generators``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["ALIASES", "Names", "applicable", "setting_name"]

ALIASES = {
    "generator.T": "T",
    "generator.tau": "tau",
    "generator.lr": "step",
    "generator.lambda_cost": "cost",
    "generator.lambda_energy": "egy",
    "train.lambda_div": "div",
    "train.lambda_reg": "reg",
    "train.lambda_adv": "adv",
    "train.lambda_class": "class",
    "train.epsilon": "eps",
    "train.burnin": "burnin",
    "train.nce": "nce",
    "train.lr": "lr",
    "train.epochs": "epochs",
    "model.hidden": "hidden",
}
BARE = ("train.objective", "generator.type", "data.name", "model.type")
"""Keys whose value names itself (``vanilla``, ``ecco``, ``moons``)."""
CT_TERMS = {  # train.* fields each objective leaves unused
    "vanilla": ("nce", "burnin", "lambda_div", "lambda_reg", "lambda_adv", "epsilon")
    + ("epsilon_norm", "epsilon_strict", "mature"),
    "energy": ("lambda_adv", "epsilon", "epsilon_norm", "epsilon_strict"),
    "adversarial": ("lambda_div", "lambda_reg", "mature"),
}
SEARCH = ("type", "T", "tau", "lr")
"""``generator.*`` fields that every generator's search reads."""


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list | tuple):
        return "x".join(map(_value, v))
    return str(v)


def setting_name(swept: Mapping[str, Any], order: Iterable[str], fallback: str) -> str:
    """``swept`` (dotted key -> value) as a short name, keys in ``order`` first."""
    keys = [k for k in order if k in swept] + [k for k in swept if k not in order]
    tails = [k.rsplit(".", 1)[-1] for k in keys]
    parts = []
    for k in keys:
        if k in BARE:
            parts.append(_value(swept[k]))
            continue
        alias = ALIASES.get(k) or (
            k.rsplit(".", 1)[-1] if tails.count(k.rsplit(".", 1)[-1]) == 1 else k
        )
        parts.append(f"{alias}={_value(swept[k])}")
    return " ".join(parts) or fallback


class Names:
    """Unique run names within a sweep: a name given before gets `` #2``, `` #3``, ..."""

    def __init__(self) -> None:
        self.count: dict[str, int] = {}

    def __call__(self, name: str) -> str:
        n = self.count[name] = self.count.get(name, 0) + 1
        return name if n == 1 else f"{name} #{n}"


def applicable(cfg: Any) -> dict[str, Any]:
    """A setting's config (``ct_core.config.Config``) as dotted params, without those it does
    not use (see the module docstring)."""
    params = cfg.flat()
    objective = cfg.train.objective
    drop = {f"train.{f}" for f in CT_TERMS.get(objective, ())}
    if objective == "vanilla":
        drop |= {k for k in params if k.startswith("generator.")}
    else:
        used = set(SEARCH) | set(_generator_fields(cfg.generator.type))
        drop |= {k for k in params if k.startswith("generator.") and k[10:] not in used}
    return {k: v for k, v in params.items() if k not in drop}


def _generator_fields(name: str) -> tuple[str, ...]:
    """The ``generator.*`` fields a registered generator reads: its class's ``fields`` (a
    penalty function's weights) and those its registration says a pack shares (a VAE's)."""
    from ct_core.generators import generator_info
    from ct_core.generators.base import PenaltyFunction

    info = generator_info(name)
    fields = getattr(info.load(), "fields", PenaltyFunction.fields)
    shared = tuple(f.split(".", 1)[1] for f in info.shared if f.startswith("generator."))
    return tuple(fields) + shared
