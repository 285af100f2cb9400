"""The per-trial learning-curve artifact, drawn with PIL: milliseconds, not a matplotlib
figure per trial (the report's seaborn figures are the polished ones)."""

from __future__ import annotations

from PIL import Image, ImageDraw

W, H, PAD = 360, 240, 36
COLOURS = {"train": (31, 119, 180), "validation": (255, 127, 14)}


def _panel(draw: ImageDraw.ImageDraw, x0: int, series: dict[str, list[float]], title: str) -> None:
    values = [v for s in series.values() for v in s]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    left, top, right, bottom = x0 + PAD, PAD, x0 + W - 10, H - PAD
    draw.rectangle([left, top, right, bottom], outline=(180, 180, 180))
    draw.text((left, 10), title, fill=(0, 0, 0))
    draw.text((x0 + 2, top - 4), f"{high:.3g}", fill=(90, 90, 90))
    draw.text((x0 + 2, bottom - 8), f"{low:.3g}", fill=(90, 90, 90))
    n = max(len(s) for s in series.values())
    draw.text((left, bottom + 6), "epoch 1", fill=(90, 90, 90))
    draw.text((right - 48, bottom + 6), f"epoch {n}", fill=(90, 90, 90))
    for label, s in series.items():
        step = (right - left) / max(n - 1, 1)
        points = [
            (left + k * step, bottom - (v - low) / span * (bottom - top)) for k, v in enumerate(s)
        ]
        if len(points) > 1:
            draw.line(points, fill=COLOURS[label], width=2)
        for px, py in points:
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=COLOURS[label])


def learning_curve_image(history: dict[str, list[float]], title: str) -> Image.Image:
    """Loss and accuracy per epoch, train and validation, side by side."""
    image = Image.new("RGB", (2 * W, H + 16), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, H), title, fill=(0, 0, 0))
    for i, (label, colour) in enumerate(COLOURS.items()):
        draw.text((W + 10 + 90 * i, H), f"- {label}", fill=colour)
    for i, metric in enumerate(("loss", "accuracy")):
        series = {"train": history[metric], "validation": history[f"val_{metric}"]}
        _panel(draw, i * W, series, metric)
    return image
