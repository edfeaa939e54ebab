"""Where the AI is unsure: the events a person should look at first, per species.

- `undefined` events (the event's best class score fell below the run's threshold), counted
  under the class the model would have picked;
- low-score events: labelled a species with an event score below halfway between the
  threshold and 1 (0.75 at the default 0.5).
Events a person already corrected (any photo of them) are not counted: they are settled.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..record import UNDEFINED
from .season import Season

NO_GUESS = "(no class)"


@dataclass
class Unsure:
    species: str
    undefined: int
    low_score: int


def low_bar(threshold: float) -> float:
    return round(threshold + (1.0 - threshold) / 2, 4)


def unsure(season: Season) -> list[Unsure]:
    bar = low_bar(season.threshold)
    undefined, low = Counter(), Counter()
    for o in season.observations:
        if o.human:
            continue
        if o.label == UNDEFINED:
            undefined[o.guess or NO_GUESS] += 1
        elif o.is_species and o.score is not None and o.score < bar:
            low[o.label] += 1
    names = sorted(set(undefined) | set(low), key=lambda k: (-(undefined[k] + low[k]), k))
    return [Unsure(k, undefined[k], low[k]) for k in names]
