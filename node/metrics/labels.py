"""Label values as Prometheus will store them: bounded in number and in length.

Every distinct label value is a time series that Prometheus keeps (and this process keeps, in
prometheus_client's tables) for as long as it runs. Several label values come from the network:
node names are chosen by the peers themselves, model ids by what peers advertise. A hostile
member that renames itself every few seconds, or advertises a fresh model id in every
description, would otherwise grow both tables without bound. So each label of each family
keeps at most `MAX_LABEL_VALUES` distinct values; later newcomers are folded into `OTHER`.
Values already seen keep counting under their own name.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

log = logging.getLogger(__name__)

# Distinct values per label of one metric family. A mesh of a few dozen devices with a handful
# of models each stays far below it; a peer renaming itself in a loop hits it and stops there.
MAX_LABEL_VALUES = 256
# Characters kept of a label value: node names are at most 63 (trust.certificates) and model ids
# short; anything longer is not a name a person chose, and would only bloat every scrape.
MAX_LABEL_CHARS = 128
# The value every label value beyond the cap becomes.
OTHER = "other"


class LabelCap:
    """The label values of one metric family, each label capped at `limit` distinct values."""

    def __init__(self, family: str, labels: Sequence[str], limit: int = MAX_LABEL_VALUES) -> None:
        if limit < 1:
            raise ValueError("a label cap keeps at least one value")
        self.family = family
        self.labels = tuple(labels)
        self.limit = limit
        self._seen: tuple[set[str], ...] = tuple(set() for _ in self.labels)
        self._warned = False

    def values(self, *values: object) -> tuple[str, ...]:
        """The label values to record for `values` (one per label, in order): each as given,
        cut to MAX_LABEL_CHARS, or OTHER once its label holds `limit` other values."""
        if len(values) != len(self.labels):
            raise ValueError(f"{self.family} takes {len(self.labels)} label values, got {len(values)}")
        return tuple(self._value(index, str(value)[:MAX_LABEL_CHARS]) for index, value in enumerate(values))

    def _value(self, index: int, value: str) -> str:
        seen = self._seen[index]
        if value in seen:
            return value
        if len(seen) >= self.limit:
            if not self._warned:  # once: the cause is one hostile or broken party, not news each time
                self._warned = True
                log.warning("metric %s has %d distinct %s values; further ones are counted as %r",
                            self.family, self.limit, self.labels[index], OTHER)
            return OTHER
        seen.add(value)
        return value


__all__ = ["MAX_LABEL_CHARS", "MAX_LABEL_VALUES", "OTHER", "LabelCap"]
