"""Drawing primitives for the toy scenes: boolean shape masks on a pixel grid (numpy, no loops over pixels).

Everything lives in *normalised* coordinates: the image spans ``[-1, 1]`` on both
axes, ``y`` down and ``x`` right, pixel centres at ``(i + 0.5) / S * 2 - 1``. Shapes are
hard-edged (no antialiasing), so a defect drawn on top of a scene changes an exact,
known set of pixels. All arrays are ``(S, S)`` float32 or bool unless stated.
"""

from __future__ import annotations

import functools

import numpy as np

F32 = np.float32


@functools.lru_cache(maxsize=8)
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(y, x)``, each ``(S, S)`` float32 in ``(-1, 1)`` (read-only, cached)."""
    c = ((np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0).astype(F32)
    y, x = np.meshgrid(c, c, indexing="ij")
    y.flags.writeable = False
    x.flags.writeable = False
    return y, x


def px(size: int, n_pixels: float) -> float:
    """Length of ``n_pixels`` pixels in normalised units at image side ``size``."""
    return 2.0 * n_pixels / size


def frame(y: np.ndarray, x: np.ndarray, centre: tuple[float, float], angle: float):
    """Coordinates ``(v, u)`` of every pixel in a frame centred at ``centre = (cy, cx)`` and rotated by ``angle``.

    ``u`` runs along the frame's x axis, ``v`` along its y axis; both ``(S, S)`` float32.
    """
    c, s = F32(np.cos(angle)), F32(np.sin(angle))
    dy, dx = y - F32(centre[0]), x - F32(centre[1])
    return -s * dx + c * dy, c * dx + s * dy


def rect(v: np.ndarray, u: np.ndarray, centre: tuple[float, float], half: tuple[float, float],
         angle: float = 0.0) -> np.ndarray:
    """Pixels inside a rectangle of half sizes ``half = (hv, hu)`` centred at ``centre = (cv, cu)``, rotated by ``angle``."""
    rv, ru = frame(v, u, centre, angle)
    return (np.abs(rv) < half[0]) & (np.abs(ru) < half[1])


def disc(v: np.ndarray, u: np.ndarray, centre: tuple[float, float], radius: float) -> np.ndarray:
    """Pixels within ``radius`` of ``centre = (cv, cu)``."""
    return (v - F32(centre[0])) ** 2 + (u - F32(centre[1])) ** 2 < F32(radius) ** 2


def ring(v: np.ndarray, u: np.ndarray, centre: tuple[float, float], r_in: float, r_out: float) -> np.ndarray:
    """Pixels whose distance to ``centre`` lies in ``[r_in, r_out)``."""
    return disc(v, u, centre, r_out) & ~disc(v, u, centre, r_in)


def polyline(y: np.ndarray, x: np.ndarray, points: np.ndarray, half_width: float) -> np.ndarray:
    """Pixels within ``half_width`` of a polyline through ``points`` ``(K, 2)`` given as ``(y, x)`` rows.

    Loops over the K-1 segments (a handful), never over pixels.
    """
    d2 = np.full(y.shape, np.inf, dtype=F32)
    for (y0, x0), (y1, x1) in zip(points[:-1], points[1:]):
        dy, dx = F32(y1 - y0), F32(x1 - x0)
        t = np.clip(((y - F32(y0)) * dy + (x - F32(x0)) * dx) / max(dy * dy + dx * dx, 1e-12), 0, 1)
        d2 = np.minimum(d2, (y - F32(y0) - t * dy) ** 2 + (x - F32(x0) - t * dx) ** 2)
    return d2 <= F32(half_width) ** 2


def curve_points(rng: np.random.Generator, centre: tuple[float, float], length: float,
                 bend: float = 0.15, n: int = 9) -> np.ndarray:
    """A gently bent stroke: ``n`` points ``(n, 2)`` (y, x) of a quadratic Bezier of chord ``length`` around ``centre``."""
    a = rng.uniform(0, np.pi)
    d = np.array([np.sin(a), np.cos(a)]) * length / 2
    normal = np.array([d[1], -d[0]])
    c = np.asarray(centre, dtype=np.float64)
    p0, p2 = c - d, c + d
    p1 = c + normal * rng.uniform(-bend, bend) * 2
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def blob(v: np.ndarray, u: np.ndarray, rng: np.random.Generator, centre: tuple[float, float],
         radius: float) -> np.ndarray:
    """An irregular round spot: radius modulated by three random angular harmonics."""
    dv, du = v - F32(centre[0]), u - F32(centre[1])
    theta = np.arctan2(dv, du)
    r = np.ones_like(theta)
    for k in (2, 3, 5):
        r += F32(rng.uniform(0.0, 0.14)) * np.cos(k * theta + F32(rng.uniform(0, 2 * np.pi)))
    return dv * dv + du * du < (F32(radius) * r) ** 2


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in ``[-1, 1]``: a ``(cells+1)^2`` random lattice, smoothstep-interpolated to ``(S, S)``."""
    lattice = rng.uniform(-1, 1, (cells + 1, cells + 1)).astype(F32)
    t = (np.arange(size, dtype=F32) + 0.5) / size * cells
    i = np.minimum(t.astype(np.int64), cells - 1)
    f = t - i
    f = f * f * (3 - 2 * f)
    rows = lattice[i] * (1 - f)[:, None] + lattice[i + 1] * f[:, None]  # (S, cells+1)
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]  # (S, S)


def paint(img: np.ndarray, mask: np.ndarray, colour, alpha: float = 1.0) -> np.ndarray:
    """Blend ``colour`` (3,) into ``img`` ``(S, S, 3)`` where ``mask``; in place, returns ``img``."""
    colour = np.asarray(colour, dtype=F32)
    img[mask] = img[mask] * F32(1 - alpha) + colour * F32(alpha)
    return img


def shade(img: np.ndarray, mask: np.ndarray, factor) -> np.ndarray:
    """Multiply ``img`` ``(S, S, 3)`` by ``factor`` (scalar or ``(S, S)``) where ``mask``; in place."""
    if np.ndim(factor) == 0:
        img[mask] *= F32(factor)
    else:
        img[mask] *= np.asarray(factor, dtype=F32)[mask][:, None]
    return img
