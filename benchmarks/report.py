"""The measuring and the report table.

Each figure is measured at least 3 times (a fast one as the mean of a batch of calls: `measure`); the
table shows the median with min and max, beside the raw-SQL ceiling of the same operation measured in
the same run, and their ratio.
"""

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


# A measurement of a fast operation is the mean of a batch of calls lasting about this long.
BATCH_SECONDS = 0.05
MAX_BATCH = 200


def measure(
    repeat: int, app: Callable[[], object] | None, ceiling: Callable[[], object] | None
) -> tuple[list[float], list[float]]:
    """(app ms, ceiling ms): each side measured `repeat` times, alternating, so that a busy moment of
    the machine hits both alike. A call under BATCH_SECONDS is timed in a batch (the same number of
    calls on both sides, as many as fill BATCH_SECONDS on the slower) and divided: a sub-millisecond
    call timed alone measures the machine's jitter as much as the call."""
    sides = [fn for fn in (app, ceiling) if fn is not None]
    slowest = max(min(timed(fn) for _ in range(3)) for fn in sides)  # also warms connections and plans
    batch = max(1, min(MAX_BATCH, int(BATCH_SECONDS / slowest)))
    times: dict[int, list[float]] = {id(fn): [] for fn in sides}
    for _ in range(repeat):
        for fn in sides:
            started = time.perf_counter()
            for _ in range(batch):
                fn()
            times[id(fn)].append((time.perf_counter() - started) / batch * 1000)
    return (times[id(app)] if app else []), (times[id(ceiling)] if ceiling else [])


@dataclass
class Figure:
    """One line of the report: the app's figure beside its raw-SQL ceiling."""

    name: str
    unit: str  # "rows/s" (higher is better) or "ms" (lower is better)
    app: list[float] = field(default_factory=list)
    ceiling: list[float] = field(default_factory=list)
    target: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """app / ceiling: for rows/s the share of the ceiling reached, for ms how many times slower."""
        if not self.app or not self.ceiling or not statistics.median(self.ceiling):
            return None
        return statistics.median(self.app) / statistics.median(self.ceiling)

    def row(self) -> list[str]:
        def spread(values: list[float]) -> str:
            if not values:
                return "-"
            return f"{statistics.median(values):,.2f} ({min(values):,.2f}–{max(values):,.2f})"

        ratio = self.ratio
        return [
            self.name,
            f"{spread(self.app)} {self.unit}",
            f"{spread(self.ceiling)} {self.unit}" if self.ceiling else "-",
            f"{ratio:.2f}" if ratio is not None else "-",
            self.target,
            self.note,
        ]


class Report:
    """The figures of a benchmark in milliseconds, in the order they are measured: each the app's call
    beside its ceiling's (either may be None), `repeat` times each (`measure`)."""

    def __init__(self, repeat: int) -> None:
        self.repeat = repeat
        self.figures: list[Figure] = []

    def time(
        self,
        name: str,
        app: Callable[[], object] | None,
        ceiling: Callable[[], object] | None,
        target: str = "",
        note: str = "",
    ) -> None:
        app_ms, ceiling_ms = measure(self.repeat, app, ceiling)
        self.figures.append(Figure(name, "ms", app=app_ms, ceiling=ceiling_ms, target=target, note=note))
        print(f"measured: {name}", flush=True)


HEADER = ["figure", "llmlog: median (min–max)", "raw SQL ceiling", "ratio", "target", "note"]


def markdown_table(figures: list[Figure]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(figure.row()) + " |" for figure in figures]
    return "\n".join(lines)
