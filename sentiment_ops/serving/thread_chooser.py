"""Whether a micro-batch that runs alone takes the predictor's many-thread session:
chosen by measuring both layouts (``ThreadChooser``), per size of the batch."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class ThreadChooser:
    """Whether a batch that runs alone takes the many-thread session (``solo``): measured,
    not assumed. Idle cores make a lone pass faster on all of them; cores busy with other
    work (another process, a neighbour's job) make the threads wait on each other, and then
    one thread is faster. Per size of the batch (tokens, by powers of two) it keeps the
    seconds per token of each choice (moving average), takes the cheaper one, and once every
    ``explore_every_s`` seconds the other one twice, so a change in the machine's load is
    noticed. The chosen layout is measured at every pass; exploring is only for the other
    one getting faster, and it costs (a lone long review on 1 thread of 2 takes ~1.6x as long).
    A pass right after a pass of the other layout is not measured (``record``): waking the
    many-thread session's sleeping threads costs that pass, which would make the layouts look
    alike; so each is first measured in a run of its own (``min_samples`` + 1 passes)."""

    def __init__(
        self,
        explore_every_s: float = 10.0,
        alpha: float = 0.2,
        min_samples: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.explore_every_s = explore_every_s
        self.alpha = alpha
        self.min_samples = min_samples
        self._clock = clock
        self._cost: dict[tuple[int, bool], float] = {}
        self._samples: dict[tuple[int, bool], int] = {}
        self._explored: dict[int, float] = {}  # when the other layout was last tried, per size
        self._exploring: dict[int, int] = {}  # passes of the other layout still to run, per size
        self._previous: bool | None = None  # the layout of the last pass, measured or not
        self._lock = threading.Lock()

    @staticmethod
    def _bucket(tokens: int) -> int:
        return max(1, tokens).bit_length()

    def pick(self, tokens: int) -> bool:
        """True: run on the many-thread session."""
        b = self._bucket(tokens)
        with self._lock:
            solo_n, one_n = self._samples.get((b, True), 0), self._samples.get((b, False), 0)
            if solo_n < self.min_samples:
                return True
            if one_n < self.min_samples:
                self._explored[b] = self._clock()
                return False
            best = self._cost[(b, True)] <= self._cost[(b, False)]
            now = self._clock()
            if not self._exploring.get(b) and now - self._explored.get(b, now) >= self.explore_every_s:
                self._exploring[b] = 2  # in a pair: the first pass after a switch is not measured
            if self._exploring.get(b):
                self._exploring[b] -= 1
                self._explored[b] = now
                return not best
            return best

    def samples(self, tokens: int) -> tuple[int, int]:
        """Batches of this size measured so far: (many-thread, one-thread)."""
        b = self._bucket(tokens)
        with self._lock:
            return self._samples.get((b, True), 0), self._samples.get((b, False), 0)

    def ran(self, solo: bool) -> None:
        """A pass that was not chosen here (batches under load run on one thread)."""
        with self._lock:
            self._previous = solo

    def record(self, tokens: int, solo: bool, seconds: float) -> None:
        """The time of a chosen pass; not kept when the pass before used the other layout."""
        key = (self._bucket(tokens), solo)
        per_token = seconds / max(1, tokens)
        with self._lock:
            switched, self._previous = self._previous != solo, solo
            if switched:
                return
            old = self._cost.get(key)
            self._cost[key] = per_token if old is None else old + self.alpha * (per_token - old)
            self._samples[key] = self._samples.get(key, 0) + 1
