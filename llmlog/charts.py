"""The dashboard's numbers and charts: counts and money as the admin shows them, and the geometry of
its SVG charts (drawn by the template; no script, no asset from the internet)."""

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any

from core.formats import money_text


def compact(value: int | Decimal | float) -> str:
    """1234 -> 1.2k, 5600000 -> 5.6M; small money keeps its cents."""
    number = float(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= limit:
            return f"{number / limit:.1f}{suffix}".replace(".0", "")
    if isinstance(value, Decimal) and number and abs(number) < 100:
        return f"{number:.2f}"
    return f"{number:.0f}"


def full(value: int | Decimal, *, currency: str = "") -> str:
    """Counts thousands separated; money as on every admin page (core.formats), with `currency`."""
    if not isinstance(value, Decimal):
        return f"{value:,}"
    return money_text(value, currency=currency)


def nice_step(peak: float, *, ticks: int = 4) -> Decimal:
    """A round step (1, 2, 2.5 or 5 times a power of ten) that covers `peak` in at most `ticks` steps."""
    if peak <= 0:
        return Decimal(1)
    raw = Decimal(repr(peak)) / ticks
    power = Decimal(10) ** raw.adjusted()
    for multiple in (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5), Decimal(10)):
        if multiple * power >= raw:
            return multiple * power
    return 10 * power  # not reached: 10 x power is always >= raw


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: str  # the exact value, for the tooltip and data-value

    @property
    def title(self) -> str:
        return f"{self.label}: {self.value}"


def _unit(unit: str, value: int | Decimal) -> str:
    """ "requests" of 1 is "1 request"."""
    return unit.removesuffix("s") if value == 1 else unit


def column_chart(
    *,
    points: Sequence[tuple[str, int | Decimal]],
    unit: str = "",
    currency: str = "",
    width: int = 520,
    height: int = 220,
) -> dict[str, Any]:
    """Geometry of a column chart (one column per point, in a `width` x `height` viewBox)."""
    left, right, top, bottom = 44, 6, 10, 22
    plot_width, plot_height = width - left - right, height - top - bottom
    # The axis runs to a round number above the highest column, ticked at round steps (0, 200, 400, ...).
    highest = max((value for _, value in points), default=0)
    step = nice_step(float(highest))
    if not isinstance(highest, Decimal):
        step = max(step.to_integral_value(rounding=ROUND_CEILING), Decimal(1))
    steps = max(1, int((Decimal(highest) / step).to_integral_value(rounding=ROUND_CEILING)))
    peak = step * steps
    slot = plot_width / max(len(points), 1)
    bars = []
    for index, (label, value) in enumerate(points):
        bar_height = float(value) / float(peak) * plot_height
        bars.append(
            Bar(
                x=round(left + index * slot + slot * 0.15, 2),
                y=round(top + plot_height - bar_height, 2),
                width=round(slot * 0.7, 2),
                height=round(bar_height, 2),
                label=label,
                value=f"{full(value, currency=currency)} {_unit(unit, value)}".strip(),
            )
        )
    every = max(1, len(points) // 6)
    x_labels = [
        {"x": round(bar.x + bar.width / 2, 2), "text": bar.label[5:]}  # MM-DD of YYYY-MM-DD
        for index, bar in enumerate(bars)
        if index % every == 0
    ]
    tick_places = max(0, -step.normalize().as_tuple().exponent)
    y_ticks = []
    for index in range(steps + 1):
        tick = step * index
        share = tick / peak
        text = compact(int(tick)) if tick >= 1000 or tick == 0 else f"{tick:.{tick_places}f}"
        y_ticks.append({"y": float(round(top + plot_height * (1 - share), 2)), "text": text})
    return {
        "width": width,
        "height": height,
        "left": left,
        "plot_right": width - right,
        "baseline": top + plot_height,
        "label_y": height - 6,
        "bars": bars,
        "x_labels": x_labels,
        "y_ticks": y_ticks,
        "total": full(sum((value for _, value in points), start=0), currency=currency),
        "has_data": any(value for _, value in points),
    }


def bar_list(
    *, rows: Sequence[tuple[str, int | Decimal]], unit: str = "", currency: str = "", width: int = 480
) -> dict[str, Any]:
    """Geometry of a horizontal bar chart: one row per (label, value), longest first."""
    label_width, row_height, value_width = 140, 24, 80
    bar_room = width - label_width - value_width
    peak = max((value for _, value in rows), default=0) or 1
    bars = [
        Bar(
            x=label_width,
            y=index * row_height + 4,
            width=round(max(float(value) / float(peak) * bar_room, 1 if value else 0), 2),
            height=row_height - 8,
            label=label or "(no org)",
            value=f"{full(value, currency=currency)} {unit}".strip(),
        )
        for index, (label, value) in enumerate(rows)
    ]
    return {
        "width": width,
        "height": max(len(rows), 1) * row_height,
        "label_x": label_width - 8,
        "value_x": width - 4,
        "text_dy": row_height / 2 + 4,
        "bars": bars,
        "has_data": bool(rows),
    }
