"""The three toy inspection scenes and their defects (fabric, disc, board).

A scene is a small dict of parameters drawn from a seeded generator; ``raster_*``
turns it into an albedo image ``(S, S, 3)`` float32 and a foreground ``(S, S)`` bool.
Defects come in two sorts:

* *structural* ones edit the parameters before rasterising (a missing bolt hole, a
  chipped rim, a missing or misplaced component, a misweave);
* *surface* ones paint onto the albedo (scratch / cut, stain, hole), clipped to the
  foreground.

Lighting and sensor noise are added afterwards by :mod:`cutswap_lib.data.toy`, with
their own generator, so the same sample rendered with and without a defect differs
exactly where the defect changed the picture.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from . import toy_draw as d

F32 = np.float32


@dataclasses.dataclass(frozen=True)
class Scene:
    """How to draw one toy category: sample parameters, rasterise, and the named defects."""

    sample: Callable[[np.random.Generator], dict]
    raster: Callable[[dict, int], tuple[np.ndarray, np.ndarray]]
    structural: dict[str, Callable[[dict, np.random.Generator], dict]]
    surface: dict[str, Callable[[np.ndarray, np.ndarray, np.random.Generator, int], None]]

    @property
    def defects(self) -> tuple[str, ...]:
        return tuple(sorted({**self.structural, **self.surface}))


def _jitter(rng, colour, amount=0.03):
    return np.asarray(colour, dtype=np.float64) + rng.uniform(-amount, amount, 3)


def _fg_point(rng: np.random.Generator, fg: np.ndarray, margin: int = 0) -> tuple[float, float]:
    """A random foreground pixel centre ``(y, x)`` (normalised), at least ``margin`` px inside the image."""
    s = fg.shape[0]
    inner = np.zeros_like(fg)
    inner[margin:s - margin, margin:s - margin] = fg[margin:s - margin, margin:s - margin]
    idx = np.flatnonzero(inner if inner.any() else fg)
    i = int(idx[rng.integers(len(idx))])
    return ((i // s) + 0.5) / s * 2 - 1, ((i % s) + 0.5) / s * 2 - 1


# --------------------------------------------------------------------------- surface defects

def _scratch(colour_choices, length=(0.3, 0.55), alpha=0.85):
    """A thin bent stroke about 2 px wide, light or dark, clipped to the foreground."""
    def apply(img, fg, rng, size):
        y, x = d.grid(size)
        pts = d.curve_points(rng, _fg_point(rng, fg, size // 5), rng.uniform(*length))
        colour = colour_choices[rng.integers(len(colour_choices))]
        d.paint(img, d.polyline(y, x, pts, d.px(size, 0.7 + 0.4 * size / 128)) & fg, colour, alpha)
    return apply


def _spot(colour, radius=(0.07, 0.12), alpha=0.6):
    """An irregular round spot (stain, hole), clipped to the foreground."""
    def apply(img, fg, rng, size):
        y, x = d.grid(size)
        spot = d.blob(y, x, rng, _fg_point(rng, fg, size // 6), rng.uniform(*radius))
        d.paint(img, spot & fg, colour, alpha)
    return apply


# --------------------------------------------------------------------------- fabric (texture)

def fabric_sample(rng: np.random.Generator) -> dict:
    """A two-tone plain weave (blue warp, pale weft) with jittered period, angle, phase and slubs."""
    return {"warp": _jitter(rng, (0.18, 0.28, 0.52)), "weft": _jitter(rng, (0.80, 0.78, 0.70)),
            "period": 2 / 12 * rng.uniform(0.96, 1.04), "angle": rng.normal(0, 0.03),
            "phase": rng.uniform(0, 1, 2), "slub": rng.uniform(0.04, 0.08),
            "slub_seed": int(rng.integers(2**31)), "misweave": None}


def fabric_raster(p: dict, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Plain weave: warp over weft on even cells, weft over warp on odd ones; ``(S,S,3)``, fg all True."""
    y, x = d.grid(size)
    v, u = d.frame(y, x, (0.0, 0.0), p["angle"])
    a, b = u / F32(p["period"]) + F32(p["phase"][0]), v / F32(p["period"]) + F32(p["phase"][1])
    fa, fb = a - np.floor(a), b - np.floor(b)
    warp_on_top = (np.floor(a) + np.floor(b)) % 2 == 0  # (S, S)
    if p["misweave"] is not None:  # weft missing from the surface: warp floats over the band
        (cv, cu), (hv, hu) = p["misweave"]
        warp_on_top |= (np.abs(v - F32(cv)) < hv) & (np.abs(u - F32(cu)) < hu)
    across = np.where(warp_on_top, fa, fb)  # position across the visible thread
    along = np.where(warp_on_top, fb, fa)  # position along it (the over/under bump)
    lum = F32(0.35) + F32(0.65) * np.abs(np.sin(np.pi * across)) ** 0.6 * (F32(0.8) + F32(0.2) * np.sin(np.pi * along))
    slub = 1 + F32(p["slub"]) * d.smooth_noise(np.random.default_rng(p["slub_seed"]), size, 6)
    colour = np.where(warp_on_top[..., None], np.asarray(p["warp"], F32), np.asarray(p["weft"], F32))
    img = colour * (lum * slub)[..., None]  # (S, S, 3)
    return img.astype(F32), np.ones((size, size), dtype=bool)


def fabric_misweave(p: dict, rng: np.random.Generator) -> dict:
    """A band one to two threads high where the weft no longer interlaces (a float)."""
    band = ((rng.uniform(-0.55, 0.55), rng.uniform(-0.55, 0.55)),
            (p["period"] * rng.uniform(0.8, 1.6), rng.uniform(0.18, 0.35)))
    return {**p, "misweave": band}


# --------------------------------------------------------------------------- disc (object)

N_BOLTS = 6


def disc_sample(rng: np.random.Generator) -> dict:
    """A turned metal disc (centre hole, six bolt holes, groove, engraved mark) on a plain backdrop."""
    return {"bg": _jitter(rng, (0.80, 0.82, 0.85)), "metal": _jitter(rng, (0.64, 0.57, 0.44)),
            "centre": tuple(rng.uniform(-0.06, 0.06, 2)), "radius": 0.62 * rng.uniform(0.97, 1.03),
            "angle": rng.uniform(-0.2, 0.2), "light": rng.uniform(-0.5, 0.5) - 2.36,
            "bolts": (True,) * N_BOLTS, "chip": None}


def disc_raster(p: dict, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Disc ``(S,S,3)`` and its footprint (the metal: through-holes and chips excluded)."""
    y, x = d.grid(size)
    R = p["radius"]
    img = np.broadcast_to(np.asarray(p["bg"], F32), (size, size, 3)) * (1 - F32(0.05) * y)[..., None]
    img = np.ascontiguousarray(img, dtype=F32)
    v, u = d.frame(y, x, p["centre"], p["angle"])
    r = np.sqrt(u * u + v * v) / F32(R)  # radius in disc units
    theta = np.arctan2(v, u)
    shadow = d.disc(y, x, (p["centre"][0] + 0.05, p["centre"][1] + 0.04), R)
    body = r < 1
    if p["chip"] is not None:
        phi, cr = p["chip"]
        body &= ~d.disc(v, u, (R * np.sin(phi), R * np.cos(phi)), cr * R)
    holes = r < 0.22
    countersink = np.zeros_like(body)
    for k, present in enumerate(p["bolts"]):
        if present:
            c = (0.5 * R * np.sin(k * np.pi / 3 + np.pi / 6), 0.5 * R * np.cos(k * np.pi / 3 + np.pi / 6))
            holes |= d.disc(v, u, c, 0.075 * R)
            countersink |= d.disc(v, u, c, 0.11 * R)
    body &= ~holes
    d.shade(img, shadow & ~body, 0.8)
    lx, ly = np.cos(p["light"]), np.sin(p["light"])
    lum = F32(0.9) + F32(0.1) * (u * F32(lx) + v * F32(ly)) / F32(R)  # flat face, lit from one side
    lum *= 1 + F32(0.025) * np.sin(r * F32(R * size / 2 / 2.5 * 2 * np.pi))  # turning marks
    lum = np.where(r > 0.9, 1 + F32(0.3) * np.cos(theta - F32(p["light"] - p["angle"])), lum)  # bevelled rim
    lum = np.where(np.abs(r - 0.72) < 0.025, lum * F32(0.7), lum)  # groove
    lum = np.where((r < 0.28) | countersink, lum * F32(0.82), lum)  # chamfers
    lum = np.where(d.rect(v, u, (0.0, 0.8 * R), (0.02 * R, 0.05 * R)), lum * F32(0.55), lum)  # mark
    img[body] = np.asarray(p["metal"], F32) * lum[body][:, None]
    return img, body


def disc_missing_hole(p: dict, rng: np.random.Generator) -> dict:
    """One bolt hole was never drilled."""
    bolts = list(p["bolts"])
    bolts[int(rng.integers(N_BOLTS))] = False
    return {**p, "bolts": tuple(bolts)}


def disc_chip(p: dict, rng: np.random.Generator) -> dict:
    """A bite broken out of the rim."""
    return {**p, "chip": (rng.uniform(0, 2 * np.pi), rng.uniform(0.14, 0.2))}


# --------------------------------------------------------------------------- board (several parts)

BOARD_HALF = (0.62, 0.80)  # (hv, hu): the board in its own frame
GOLD, SILVER = (0.80, 0.66, 0.30), (0.78, 0.78, 0.80)
# name: (kind, centre (v, u), half (hv, hu)), in board coordinates
PARTS = {
    "ic1": ("ic", (-0.18, -0.35), (0.14, 0.22)),
    "ic2": ("ic", (-0.30, 0.42), (0.11, 0.11)),
    "r1": ("resistor", (0.22, 0.02), (0.035, 0.09)),
    "r2": ("resistor", (0.37, 0.02), (0.035, 0.09)),
    "r3": ("resistor", (0.10, 0.45), (0.035, 0.09)),
    "c1": ("capacitor", (0.30, -0.55), (0.10, 0.10)),
    "c2": ("capacitor", (0.30, 0.58), (0.10, 0.10)),
    "led": ("led", (-0.02, 0.66), (0.03, 0.05)),
    "conn": ("connector", (0.50, -0.20), (0.07, 0.30)),
}
REMOVABLE = ("ic2", "r1", "r2", "r3", "c1", "c2", "led")
TRACES = (((-0.04, -0.50), (0.22, -0.50), (0.22, -0.10)),
          ((-0.04, -0.20), (0.10, -0.20), (0.10, 0.33)),
          ((-0.30, 0.28), (-0.30, 0.10), (-0.48, 0.10), (-0.48, -0.55)),
          ((0.30, 0.58), (0.10, 0.58), (-0.02, 0.58)),
          ((0.37, 0.12), (0.37, 0.30), (0.20, 0.30), (0.20, 0.45)))
RESISTOR_BANDS = ((0.55, 0.25, 0.1), (0.1, 0.1, 0.1), (0.85, 0.5, 0.1))


def board_sample(rng: np.random.Generator) -> dict:
    """A green board with two ICs, three resistors, two capacitors, an LED and a connector."""
    pose = {name: (part[1][0] + rng.uniform(-0.008, 0.008), part[1][1] + rng.uniform(-0.008, 0.008),
                   rng.normal(0, 0.01)) for name, part in PARTS.items()}
    return {"table": _jitter(rng, (0.20, 0.20, 0.22)), "board": _jitter(rng, (0.10, 0.40, 0.22)),
            "centre": tuple(rng.uniform(-0.04, 0.04, 2)), "angle": rng.uniform(-0.05, 0.05),
            "pose": pose, "present": {name: True for name in PARTS},
            "table_seed": int(rng.integers(2**31))}


def _pads(v, u, kind, c, h):
    """Solder pads printed on the board under a part (seen when the part is missing or moved)."""
    if kind == "ic":
        return _pins(v, u, c, h, 0.0, grow=0.012)
    if kind == "connector":
        return d.rect(v, u, c, (h[0] + 0.015, h[1] + 0.015))
    off = h[1] + 0.01 if kind != "capacitor" else 0.07
    return (d.rect(v, u, (c[0], c[1] - off), (0.045, 0.03))
            | d.rect(v, u, (c[0], c[1] + off), (0.045, 0.03)))


def _pins(v, u, c, h, angle, grow=0.0):
    """IC legs along the two long sides: a periodic comb, computed in one pass."""
    rv, ru = d.frame(v, u, c, angle)
    n = 7 if h[1] > 0.15 else 4
    pitch = F32(2 * h[1] * 0.9 / n)
    phase = (ru + F32(h[1] * 0.9)) / pitch
    comb = (np.abs(phase - np.floor(phase) - 0.5) < 0.22 + grow / pitch) & (np.abs(ru) < h[1] * 0.9)
    return comb & (np.abs(rv) >= h[0] - grow) & (np.abs(rv) < h[0] + 0.06 + grow)


def _draw_part(img, v, u, kind, pose, h):
    c, angle = (pose[0], pose[1]), pose[2]
    if kind == "ic":
        d.paint(img, _pins(v, u, c, h, angle), SILVER)
        d.paint(img, d.rect(v, u, c, h, angle), (0.08, 0.08, 0.09))
        rv, ru = d.frame(v, u, c, angle)
        d.paint(img, d.disc(rv, ru, (-h[0] * 0.6, -h[1] * 0.75), 0.025), (0.6, 0.6, 0.6))
    elif kind == "resistor":
        d.paint(img, d.rect(v, u, c, h, angle), (0.80, 0.70, 0.50))
        rv, ru = d.frame(v, u, c, angle)
        for k, colour in enumerate(RESISTOR_BANDS):
            d.paint(img, d.rect(rv, ru, (0.0, (k - 1) * 0.04), (h[0], 0.012)), colour)
    elif kind == "capacitor":
        d.paint(img, d.disc(v, u, c, h[0]), (0.12, 0.14, 0.34))
        rv, ru = d.frame(v, u, c, angle)
        d.paint(img, d.rect(rv, ru, (0.0, -0.065), (h[0] * 0.8, 0.02)) & d.disc(rv, ru, (0, 0), h[0]),
                (0.75, 0.78, 0.85))
    elif kind == "led":
        d.paint(img, d.rect(v, u, c, h, angle), (0.85, 0.12, 0.10))
    else:  # connector: a white housing with a row of dark sockets
        d.paint(img, d.rect(v, u, c, h, angle), (0.88, 0.88, 0.84))
        rv, ru = d.frame(v, u, c, angle)
        for k in range(6):
            d.paint(img, d.rect(rv, ru, (0.0, (k - 2.5) * 0.09), (0.025, 0.025)), (0.15, 0.15, 0.15))


def board_raster(p: dict, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Board ``(S,S,3)`` and its footprint (the board rectangle)."""
    y, x = d.grid(size)
    table = 1 + F32(0.15) * d.smooth_noise(np.random.default_rng(p["table_seed"]), size, 5)
    img = np.asarray(p["table"], F32) * table[..., None]  # (S, S, 3)
    v, u = d.frame(y, x, p["centre"], p["angle"])
    fg = d.rect(v, u, (0.0, 0.0), BOARD_HALF)
    d.paint(img, fg, p["board"])
    for trace in TRACES:
        d.paint(img, d.polyline(v, u, np.asarray(trace), 0.018) & fg, (0.22, 0.55, 0.30))
    for sv in (-0.5, 0.5):
        for su in (-0.68, 0.68):
            d.paint(img, d.disc(v, u, (sv, su), 0.06), GOLD)
            d.paint(img, d.disc(v, u, (sv, su), 0.035), (0.05, 0.05, 0.05))
    for name, (kind, c, h) in PARTS.items():
        d.paint(img, _pads(v, u, kind, c, h), GOLD)
        if kind == "ic":  # silkscreen outline
            d.paint(img, d.rect(v, u, c, (h[0] + 0.10, h[1] + 0.04))
                    & ~d.rect(v, u, c, (h[0] + 0.10 - d.px(size, 1), h[1] + 0.04 - d.px(size, 1))),
                    (0.92, 0.92, 0.90))
    for name, (kind, c, h) in PARTS.items():
        if p["present"][name]:
            _draw_part(img, v, u, kind, p["pose"][name], h)
    return img.astype(F32), fg


def board_missing(p: dict, rng: np.random.Generator) -> dict:
    """One part was never placed; its pads show."""
    name = REMOVABLE[int(rng.integers(len(REMOVABLE)))]
    return {**p, "present": {**p["present"], name: False}}


def board_misplaced(p: dict, rng: np.random.Generator) -> dict:
    """One part sits shifted and twisted off its pads."""
    name = REMOVABLE[int(rng.integers(len(REMOVABLE)))]
    cv, cu, angle = p["pose"][name]
    a, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0.08, 0.13)
    twist = rng.choice([-1, 1]) * rng.uniform(0.15, 0.35)
    return {**p, "pose": {**p["pose"], name: (cv + dist * np.sin(a), cu + dist * np.cos(a), angle + twist)}}


SCENES: dict[str, Scene] = {
    "fabric": Scene(fabric_sample, fabric_raster, {"misweave": fabric_misweave},
                    {"cut": _scratch([(0.06, 0.05, 0.05)], alpha=0.9),
                     "hole": _spot((0.03, 0.03, 0.03), radius=(0.05, 0.08), alpha=1.0),
                     "stain": _spot((0.55, 0.40, 0.12), radius=(0.08, 0.14), alpha=0.6)}),
    "disc": Scene(disc_sample, disc_raster, {"chip": disc_chip, "missing_hole": disc_missing_hole},
                  {"scratch": _scratch([(0.95, 0.94, 0.90), (0.18, 0.16, 0.14)]),
                   "stain": _spot((0.45, 0.22, 0.08), radius=(0.07, 0.12), alpha=0.65)}),
    "board": Scene(board_sample, board_raster, {"missing": board_missing, "misplaced": board_misplaced},
                   {"scratch": _scratch([(0.86, 0.82, 0.70)]),
                    "stain": _spot((0.50, 0.38, 0.15), radius=(0.06, 0.10), alpha=0.65)}),
}
