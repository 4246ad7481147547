"""Non-photographic test images drawn by code: a UI screenshot with small text, charts, line art and a
scanned document. The benchmark (`python -m bench.rd --synthetic`) and the tests use the same drawings.

Every function takes (width, height, seed) and returns an (H, W, 3) uint8 array; the drawings are
deterministic for a given seed and Pillow version.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

_WORDS = ("File Edit View Help Save Open Close Export Settings Profile Search Results Total Amount Status "
          "Ready Pending Done Error Name Date Size Type Owner Shared Recent Upload Download Cancel Apply").split()


def _font(size: int):
    return ImageFont.load_default(size=size)


def _sentence(rng: np.random.Generator, words: int) -> str:
    return " ".join(rng.choice(_WORDS, words))


def ui_screenshot(width: int = 768, height: int = 512, seed: int = 0) -> np.ndarray:
    """Flat panels, a toolbar, a list of rows of 10-px text, buttons and a small bar chart."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (width, height), (246, 247, 249))
    draw = ImageDraw.Draw(img)
    font = _font(10)
    draw.rectangle((0, 0, width, 28), fill=(38, 50, 72))
    for i, word in enumerate(("File", "Edit", "View", "Tools", "Help")):
        draw.text((10 + 48 * i, 8), word, fill=(230, 235, 245), font=font)
    side = width // 5
    draw.rectangle((0, 28, side, height), fill=(226, 230, 236))
    for row in range(40, height - 16, 22):
        draw.text((12, row), _sentence(rng, 2), fill=(40, 40, 40), font=font)
    table_right = side + (width - side) * 3 // 5
    for i, row in enumerate(range(44, height - 20, 18)):
        if i % 2:
            draw.rectangle((side + 8, row - 3, table_right, row + 14), fill=(236, 240, 246))
        draw.text((side + 14, row), _sentence(rng, 4), fill=(20, 20, 20), font=font)
        draw.text((table_right - 60, row), f"{rng.integers(0, 99999):>6}", fill=(20, 90, 160), font=font)
    for i, label in enumerate(("Apply", "Cancel")):
        x = table_right + 16 + 80 * i
        draw.rounded_rectangle((x, height - 40, x + 70, height - 16), 4, fill=(52, 120, 246) if i == 0 else (255, 255, 255),
                               outline=(52, 120, 246))
        draw.text((x + 18, height - 34), label, fill=(255, 255, 255) if i == 0 else (52, 120, 246), font=font)
    chart = (table_right + 16, 48, width - 12, height - 60)
    draw.rectangle(chart, fill=(255, 255, 255), outline=(200, 204, 210))
    bars = rng.uniform(0.15, 0.95, 8)
    bar_w = (chart[2] - chart[0] - 16) / len(bars)
    colours = [(52, 120, 246), (246, 150, 52), (60, 180, 110), (220, 70, 80)]
    for i, value in enumerate(bars):
        x0 = chart[0] + 8 + i * bar_w
        draw.rectangle((x0 + 2, chart[3] - 20 - value * (chart[3] - chart[1] - 40), x0 + bar_w - 2, chart[3] - 20),
                       fill=colours[i % len(colours)])
        draw.text((x0 + 3, chart[3] - 16), f"Q{i + 1}", fill=(90, 90, 90), font=font)
    return np.asarray(img)


def pillow_chart(width: int = 768, height: int = 512, seed: int = 0) -> np.ndarray:
    """A line chart with axes, a grid, tick labels and a legend, drawn with Pillow (no anti-aliasing)."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = _font(11)
    left, top, right, bottom = 60, 30, width - 20, height - 40
    for i in range(6):
        y = bottom - i * (bottom - top) / 5
        draw.line((left, y, right, y), fill=(225, 225, 225))
        draw.text((left - 34, y - 6), f"{20 * i:>3}", fill=(60, 60, 60), font=font)
    for i in range(9):
        x = left + i * (right - left) / 8
        draw.text((x - 8, bottom + 6), f"{2016 + i}", fill=(60, 60, 60), font=font)
    draw.line((left, top, left, bottom, right, bottom), fill=(0, 0, 0), width=1)
    for k, colour in enumerate([(31, 119, 180), (255, 127, 14), (44, 160, 44)]):
        values = np.cumsum(rng.normal(0, 1, 60)) * 4 + 50 + 10 * k
        xs = np.linspace(left, right, len(values))
        ys = bottom - np.clip(values, 0, 100) / 100 * (bottom - top)
        draw.line(list(zip(xs, ys)), fill=colour, width=2)
        draw.line((right - 120, top + 10 + 16 * k, right - 100, top + 10 + 16 * k), fill=colour, width=2)
        draw.text((right - 94, top + 4 + 16 * k), f"series {k + 1}", fill=(0, 0, 0), font=font)
    return np.asarray(img)


def matplotlib_chart(width: int = 768, height: int = 512, seed: int = 0) -> np.ndarray:
    """A matplotlib line chart (anti-aliased lines and text), as `plt.savefig` would write it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    fig, ax = plt.subplots(figsize=(width / 100, height / 100), dpi=100)
    t = np.linspace(0, 10, 400)
    for k in range(3):
        ax.plot(t, np.sin(t * (k + 1) / 2) + 0.1 * np.cumsum(rng.normal(0, 0.1, t.size)), label=f"run {k + 1}")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("signal")
    ax.set_title("Measured response")
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    with Image.open(buf) as chart:
        return np.asarray(chart.convert("RGB"))


def line_art(width: int = 768, height: int = 512, seed: int = 0) -> np.ndarray:
    """Black outlines on white with a few flat fills: a diagram or a colouring-book drawing."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    fills = [(255, 221, 87), (129, 199, 245), (240, 128, 128), (255, 255, 255)]
    for _ in range(18):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(30, 160, 2)
        box = (x, y, x + w, y + h)
        fill = fills[rng.integers(len(fills))]
        if rng.random() < 0.5:
            draw.ellipse(box, fill=fill, outline=(0, 0, 0), width=2)
        else:
            draw.polygon([(x, y + h), (x + w / 2, y), (x + w, y + h)], fill=fill, outline=(0, 0, 0), width=2)
    for _ in range(10):
        points = rng.uniform(0, 1, (4, 2)) * (width, height)
        draw.line([tuple(p) for p in points], fill=(0, 0, 0), width=1)
    return np.asarray(img)


def document_scan(width: int = 768, height: int = 512, seed: int = 0) -> np.ndarray:
    """A page of text as a scanner gives it: off-white paper, slight blur, sensor noise, grey."""
    rng = np.random.default_rng(seed)
    img = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(img)
    font = _font(13)
    draw.text((40, 24), "Quarterly report", fill=0, font=_font(22))
    for row in range(64, height - 30, 18):
        draw.text((40, row), _sentence(rng, 12), fill=0, font=font)
    page = np.asarray(img.filter(ImageFilter.GaussianBlur(0.6)), dtype=np.float64)
    shading = 238 - 10 * np.linspace(0, 1, width)[None, :]  # uneven lighting across the page
    page = page / 255 * (shading - 30) + 30 + rng.normal(0, 2.0, page.shape)
    grey = np.clip(np.round(page), 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


SYNTHETIC = {"ui": ui_screenshot, "chart": pillow_chart, "plot": matplotlib_chart, "lineart": line_art,
             "document": document_scan}


def main(argv=None) -> None:
    """python -m bench.synthetic DIR: write every drawing as DIR/NAME.png, e.g. for `bench.rd --images DIR`."""
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("folder")
    folder = Path(parser.parse_args(argv).folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, draw in SYNTHETIC.items():
        Image.fromarray(draw()).save(folder / f"{name}.png")
        print(f"wrote {folder / name}.png")


if __name__ == "__main__":
    main()
