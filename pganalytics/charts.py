"""Server-side SVG line charts: pages stay readable without JavaScript or a charting CDN."""

from dataclasses import dataclass

from pganalytics.formats import timestamp

WIDTH, HEIGHT, MARGIN = 720, 200, 36


@dataclass
class LineChart:
    width: int
    height: int
    polyline: str
    dots: list
    y_max_label: str
    x_first_label: str
    x_last_label: str
    empty: bool


def line_chart(points, *, unit="ms", width=WIDTH, height=HEIGHT):
    """A LineChart of `points` = [(datetime, value or None)], skipping missing values."""
    known = [(when, value) for when, value in points if value is not None]
    if not known:
        return LineChart(width, height, "", [], "", "", "", empty=True)
    top = max(value for _, value in known) or 1.0
    inner_w, inner_h = width - 2 * MARGIN, height - 2 * MARGIN
    step = inner_w / max(1, len(known) - 1)
    dots = [
        (round(MARGIN + i * step, 1), round(MARGIN + inner_h * (1 - value / top), 1))
        for i, (_, value) in enumerate(known)
    ]
    return LineChart(
        width,
        height,
        polyline=" ".join(f"{x},{y}" for x, y in dots),
        dots=dots,
        y_max_label=f"{top:,.2f} {unit}",
        x_first_label=timestamp(known[0][0]),
        x_last_label=timestamp(known[-1][0]),
        empty=False,
    )
