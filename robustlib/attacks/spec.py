"""Attack specs: an attack's name with its own options, the way studies take attacks.

A study that runs attacks takes each one as a *spec*: the attack's name and any
options of that attack's config class, written as a name (``"gcg"``) or a mapping
(``{"name": "beast", "n_attack_tokens": 25}``). The options are validated by the
attack's own config class, so no study repeats them and every option of every attack
(``samples_per_beam``, ``resample_tries``, ...) can be set from a notebook. A study
sets the settings it owns itself (the position, the seed, the iterations of a training
attack, ...); a spec that tries to set one of those is refused, naming the study
parameter that does. ``label`` (default: the name) tells two specs of one attack
apart, e.g. GCG with 10 tokens and GCG with 20 tokens in one study.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_LABEL = re.compile(r"^[A-Za-z0-9_.-]+$")
_HELP = "an attack name, or a mapping with 'name' (and optionally 'label') and that attack's options"


@dataclass(frozen=True)
class AttackSpec:
    """One attack as a study runs it: ``name``, its ``options`` and a ``label``."""

    name: str
    options: dict = field(default_factory=dict)
    label: str = ""

    @classmethod
    def parse(cls, value, where: str, owned: dict[str, str] | None = None) -> AttackSpec:
        """Read a spec given as a name or a mapping; ``where`` names it in errors
        (``"train_attacks[1]"``) and ``owned`` maps the options the study sets itself
        to the study parameter that sets them. Every option is validated by building
        the attack's config (the owned ones at their defaults, the iterations at 1 when
        the study sets them: it checks its own budget when it builds its configs)."""
        from robustlib.attacks import get_config_class

        owned = owned or {}
        if isinstance(value, AttackSpec):
            value = value.to_dict()
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            raise ValueError(f"{where}={value!r} is invalid; accepted: {_HELP}")
        options = dict(value)
        name = options.pop("name")
        label = options.pop("label", name)
        try:
            config_class = get_config_class(name)
        except ValueError as err:
            raise type(err)(f"{where}: {err}") from None
        if not isinstance(label, str) or not _LABEL.match(label):
            raise ValueError(f"{where}: label={label!r} is invalid; accepted: letters, digits, '_', '.', '-'")
        taken = sorted(set(options) & set(owned))
        if taken:
            raise ValueError(f"{where}: {', '.join(f'{k!r} is set by {owned[k]}' for k in taken)}, "
                             "not by the attack spec")
        accepted = sorted(set(config_class.field_names()) - set(owned))
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ValueError(f"{where}: unknown {name} option(s) {unknown}; accepted: {accepted}")
        # The study checks the options it owns when it builds its configs; here the
        # spec's own options are checked, at the smallest budget when the study sets it.
        probe = {"iterations": 1} if "iterations" in owned else {}
        try:
            config_class.from_dict({**options, **probe})
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from None
        return cls(name, options, label)

    def config(self, **settings):
        """The attack's config: the spec's options plus the study's ``settings``."""
        from robustlib.attacks import get_config_class

        return get_config_class(self.name).from_dict({**self.options, **settings})

    def to_dict(self) -> dict:
        """The spec as written: ``{"name": ..., ["label": ...], **options}``."""
        label = {"label": self.label} if self.label and self.label != self.name else {}
        return {"name": self.name, **label, **self.options}


def parse_specs(values, where: str, owned: dict[str, str] | None = None) -> list[AttackSpec]:
    """A non-empty list of specs with distinct labels (see :meth:`AttackSpec.parse`)."""
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"{where}={values!r} is invalid; accepted: a non-empty list of attack specs ({_HELP})")
    specs = [AttackSpec.parse(v, f"{where}[{i}]", owned) for i, v in enumerate(values)]
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"{where}: two specs share a label ({labels}); give them distinct 'label's")
    return specs
