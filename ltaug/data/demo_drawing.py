"""The demo's drawings: the anatomy of a frontal chest radiograph and one drawer per finding.

Each drawer paints its finding into a float image in place, in a class-specific region, from
its own random stream, and returns the mask of the pixels it changed (ltaug.data.demo turns that
into the finding's ground-truth box). ``FINDINGS`` says what each looks like; ``DRAWERS`` is
the order they are drawn in (replacing patterns first, additive ones on top, devices last).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FINDINGS: dict[str, str] = {
    "Cardiomegaly": "heart shadow drawn ~1.4x wider (cardiothoracic ratio > 0.5)",
    "Pleural Effusion": "bright fluid filling one lung base, its top a meniscus rising laterally",
    "Lung Opacity": "hazy, irregular bright patch in the mid/upper zone of one lung",
    "Support Devices": "thin very bright tube down from the neck + small bright box on the upper chest (image right)",
    "Atelectasis": "plate-like bright band, nearly horizontal, in the lower zone of one lung",
    "Pneumothorax": "texture-free very dark crescent at one lung's apex/lateral wall, bounded by a thin pleural line",
    "Nodule": "small dense round spot inside one lung",
    "Fracture": "short thin bright oblique line across the lateral part of one rib",
    "Calcification of the Aorta": "thin bright arc on the upper outer contour of the aortic knob (image right)",
    "Pneumoperitoneum": "dark crescent of free air just under the right hemidiaphragm (image left)",
}


# ---------------------------------------------------------------- drawing primitives
# Every mask is in [0, 1] and exactly 0 beyond half a pixel outside its shape, so a
# finding's support (mask > 0) bounds what it changes before the final blur.


def _ramp(d: np.ndarray, width: float = 1.0) -> np.ndarray:
    """Soft inside-indicator of a signed distance ``d`` in px (> 0 inside)."""
    return np.clip(d / width + 0.5, 0.0, 1.0)


def _ellipse(g: _Anatomy, x: float, y: float, a: float, b: float, p: float = 2.0) -> np.ndarray:
    """(S, S) mask of the (super)ellipse |dx/a|^p + |dy/b|^p <= 1, all in px."""
    r = (np.abs((g.xx - x) / a) ** p + np.abs((g.yy - y) / b) ** p) ** (1 / p)
    return _ramp((1 - r) * min(a, b))


def _segment(g: _Anatomy, x0: float, y0: float, x1: float, y1: float, half_width: float) -> np.ndarray:
    """(S, S) mask of a stroke of ``half_width`` px along the segment (x0, y0)-(x1, y1)."""
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((g.xx - x0) * dx + (g.yy - y0) * dy) / (dx * dx + dy * dy), 0, 1)
    return _ramp(half_width - np.hypot(g.xx - x0 - t * dx, g.yy - y0 - t * dy))


@dataclass
class _Anatomy:
    """One image's jittered anatomy; lengths in px, (u, v) are body-frame units (1 = one body size)."""

    xx: np.ndarray  # (S, S) pixel-centre x
    yy: np.ndarray  # (S, S) pixel-centre y
    cx: float  # body midline x
    cy: float  # body frame centre y
    unit: float  # px per body-frame unit
    gain: float  # exposure: contrast factor around gray 100 ...
    offset: float  # ... and brightness shift, applied after the findings
    lungs: dict  # side "R"/"L" -> (x, y, a, b) of the lung ellipse; R = patient right = image left
    lung_mask: dict  # side -> (S, S) visible lung (ellipse above the diaphragm)
    domes: dict  # side -> (x of dome top, y of dome top, half-width) of each hemidiaphragm
    knob: tuple  # (x, y, a, b) of the aortic knob
    heart_change: np.ndarray  # (S, S) |enlarged - normal| heart mask (Cardiomegaly's support)

    def px(self, u: float, v: float) -> tuple[float, float]:
        return self.cx + u * self.unit, self.cy + v * self.unit

    def dome_y(self, side: str) -> np.ndarray:
        """(S,) y of the hemidiaphragm at every x: a parabola, lowest laterally."""
        x, y, w = self.domes[side]
        return y + 0.15 * self.unit * ((self.xx[0] - x) / w) ** 2

    def rib_y(self, k: int, x: np.ndarray | float) -> np.ndarray | float:
        """y of rib k (0 = top) at x; posterior ribs rise a little from the spine, then fall laterally."""
        t = np.abs(x - self.cx) / (0.3 * self.unit)
        return self.cy + (-0.30 + 0.062 * k - 0.02 * t + 0.09 * t * t) * self.unit


_SIDES = {"R": -1, "L": 1}  # x direction of the patient's side in the image


def draw_anatomy(size: int, rng: np.random.Generator, enlarged_heart: bool) -> tuple[np.ndarray, _Anatomy]:
    """(S, S) float image of the normal anatomy (gray levels ~0-255) and its geometry."""
    jx, jy, scale, heart, dome, lung_w, body_w, gain, offset = rng.uniform(
        [-0.03, -0.03, 0.92, 0.93, -0.02, 0.94, 0.95, 0.88, -10], [0.03, 0.03, 1.05, 1.07, 0.02, 1.06, 1.05, 1.12, 10]
    )  # always the same draws, so the anatomy does not depend on the findings
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    unit = size * scale
    g = _Anatomy(xx, yy, (0.5 + jx) * size, (0.5 + jy) * size, unit, gain, offset, {}, {}, {}, (), np.zeros(0))
    img = np.full((size, size), 6.0)  # air around the patient

    # body: a boxy torso and the neck; soft tissue below the diaphragm is denser
    body = np.maximum(_ellipse(g, *g.px(0, 0.16), 0.47 * body_w * unit, 0.62 * unit, p=4),
                      _ellipse(g, *g.px(0, -0.5), 0.09 * unit, 0.16 * unit))
    img += (105 - 6) * body
    for side, sx in _SIDES.items():
        g.domes[side] = (*g.px(0.2 * sx, (0.12 if side == "R" else 0.15) + dome), 0.2 * unit)
    dome_y = np.where(xx < g.cx, g.dome_y("R"), g.dome_y("L"))  # (S, S)
    img += 30 * body * _ramp(yy - dome_y, 1.5)

    # lungs: dark (air), a little brighter towards the hila (vessels), cut below by the domes
    for side, sx in _SIDES.items():
        x, y = g.px(0.2 * sx, -0.03)
        g.lungs[side] = (x, y, 0.15 * lung_w * unit, 0.32 * unit)
        g.lung_mask[side] = _ellipse(g, *g.lungs[side]) * _ramp(g.dome_y(side) - yy, 1.5)
        hx, hy = g.px(0.09 * sx, -0.02)
        vessels = 22 * np.exp(-((xx - hx) ** 2 + (yy - hy) ** 2) / (2 * (0.09 * unit) ** 2))
        img += (40 + vessels - img) * g.lung_mask[side]
    lungs = g.lung_mask["R"] + g.lung_mask["L"]
    lateral = np.abs(xx - g.cx)
    ribs = body * (3 + 10 * lungs) * _ramp(lateral - 0.04 * unit, 2) * _ramp(0.37 * unit - lateral, 2)
    below_first = yy - g.rib_y(0, xx)  # ribs: 8 faint bands 0.062 units apart, visible mostly over the lungs
    nearest = np.clip(np.rint(below_first / (0.062 * unit)), 0, 7)
    img += ribs * _ramp(0.011 * unit - np.abs(below_first - nearest * 0.062 * unit), 1.5)

    # mediastinum, heart (bigger with Cardiomegaly), aortic knob, trachea, spine, clavicles
    img += (165 - img) * _ellipse(g, *g.px(0, -0.12), 0.075 * unit, 0.3 * unit, p=3)
    normal = _ellipse(g, *g.px(0.035, 0.1), 0.14 * heart * unit, 0.12 * heart * unit)
    big = _ellipse(g, *g.px(0.055, 0.1), 0.20 * heart * unit, 0.135 * heart * unit)
    g.heart_change = np.abs(big - normal)
    img += (170 - img) * (big if enlarged_heart else normal)
    g.knob = (*g.px(0.075, -0.22), 0.045 * unit, 0.04 * unit)
    img += (160 - img) * _ellipse(g, *g.knob)
    img -= 35 * _ellipse(g, *g.px(0, -0.42), 0.018 * unit, 0.2 * unit)
    vertebrae = 0.7 + 0.3 * np.cos(2 * np.pi * (yy - g.cy) / (0.065 * unit))
    img += 18 * vertebrae * _ramp(0.03 * unit - np.abs(xx - g.cx), 1.5) * body
    for sx in _SIDES.values():
        img += 22 * _segment(g, *g.px(0.04 * sx, -0.36), *g.px(0.30 * sx, -0.42), 0.015 * unit)
    return img, g


# ---------------------------------------------------------------- findings
# Each takes the float image, the anatomy and the finding's own generator, draws in place
# and returns the (S, S) mask of where it drew.


def _side(rng: np.random.Generator) -> tuple[str, int]:
    side = "R" if rng.random() < 0.5 else "L"
    return side, _SIDES[side]


def _cardiomegaly(img, g, rng):
    return g.heart_change  # drawn with the anatomy, whose stream must not depend on the findings


def _pleural_effusion(img, g, rng):
    side, sx = _side(rng)
    x, y, a, b = g.lungs[side]
    level, rise, strength = rng.uniform([0.30, 0.06, 0.85], [0.45, 0.10, 0.95])
    t = np.clip((g.xx - x) * sx / a * 0.5 + 0.5, 0, 1)  # 0 at the medial, 1 at the lateral wall
    meniscus = y + level * b - rise * g.unit * t * t  # fluid climbs the lateral wall
    fluid = g.lung_mask[side] * _ramp(g.yy - meniscus, 3)
    denser = np.maximum(150 - img, 0)  # fluid adds density: it leaves the brighter heart alone
    img += denser * strength * fluid
    return fluid * (denser > 0)


def _lung_opacity(img, g, rng):
    side, sx = _side(rng)
    x, y, a, b = g.lungs[side]
    du, dv, rx, ry, fx, fy, px, py, gain = rng.uniform(
        [-0.15, -0.55, 0.055, 0.06, 8, 8, 0, 0, 35], [0.5, -0.1, 0.085, 0.1, 14, 14, 6.3, 6.3, 50]
    )
    ox, oy = x + du * sx * a, y + dv * b
    r2 = ((g.xx - ox) / (rx * g.unit)) ** 2 + ((g.yy - oy) / (ry * g.unit)) ** 2
    mottle = 1 + 0.3 * np.sin(fx * (g.xx - ox) / g.unit * 2 + px) * np.sin(fy * (g.yy - oy) / g.unit * 2 + py)
    haze = np.clip(1 - r2, 0, 1) ** 2 * mottle * g.lung_mask[side]
    img += gain * haze
    return haze


def _support_devices(img, g, rng):
    x0, v_end, bow, du, dv = rng.uniform([-0.012, -0.15, -0.02, 0.20, -0.36], [0.012, 0.25, 0.02, 0.27, -0.28])
    top, end = 0.0, g.px(0, v_end)[1]
    s = np.clip((g.yy - top) / (end - top), 0, 1)
    path_x = g.px(x0, 0)[0] + bow * g.unit * np.sin(np.pi * s)  # a gently bowed tube
    tube = _ramp(0.006 * g.unit + 0.25 - np.abs(g.xx - path_x)) * _ramp(end - g.yy)
    device = _ellipse(g, *g.px(du, dv), 0.035 * g.unit, 0.022 * g.unit, p=6)
    img += (235 - img) * 0.9 * tube
    img += (250 - img) * device
    return np.maximum(tube, device)


def _atelectasis(img, g, rng):
    side, sx = _side(rng)
    x, y, a, b = g.lungs[side]
    du, dv, angle, half_len, half_w = rng.uniform([-0.2, 0.1, -0.25, 0.5, 0.012], [0.25, 0.3, 0.25, 0.75, 0.018])
    ox, oy, h = x + du * sx * a, y + dv * b, half_len * a
    dx, dy = h * np.cos(angle), h * np.sin(angle)
    plate = _segment(g, ox - dx, oy - dy, ox + dx, oy + dy, half_w * g.unit) * g.lung_mask[side]
    img += 55 * plate
    return plate


def _pneumothorax(img, g, rng):
    side, sx = _side(rng)
    x, y, a, b = g.lungs[side]
    f = rng.uniform(0.72, 0.85)  # size of the collapsed lung
    cx, cy = x - sx * (1 - f) * a, y + 0.8 * (1 - f) * b  # it falls medially and down
    inner = _ellipse(g, cx, cy, f * a, f * b)
    upper = _ramp(y + 0.2 * b - g.yy, 0.2 * b)  # apex and upper lateral wall only
    outer = _ellipse(g, x, y, a, b)
    air = outer * (1 - inner) * upper
    img += (12 - img) * air  # replaces everything, noise and ribs included: texture-free
    r = np.sqrt(((g.xx - cx) / (f * a)) ** 2 + ((g.yy - cy) / (f * b)) ** 2)
    pleura = _ramp(0.6 - np.abs(r - 1) * f * min(a, b)) * outer * upper
    img += 45 * pleura
    return np.maximum(air, pleura)


def _nodule(img, g, rng):
    side, sx = _side(rng)
    x, y, a, b = g.lungs[side]
    # radius 0.068-0.085 body units: 8-11 px at 128 px, a spot spanning at least two 8x latent cells
    # (a 1 cm nodule spans ~1.75 cells of a 512 px RoentGen latent)
    du, dv, r = rng.uniform([-0.1, -0.45, 0.068], [0.35, 0.1, 0.085])  # inside the lung, off the mediastinum
    spot = _ellipse(g, x + du * sx * a, y + dv * b, r * g.unit, r * g.unit)
    img += 70 * spot
    return spot


def _fracture(img, g, rng):
    side, sx = _side(rng)
    k = int(rng.integers(2, 7))
    u, turn, half_len = rng.uniform([0.24, 0.35, 0.05], [0.29, 0.7, 0.065])
    x = g.cx + sx * u * g.unit
    y = g.rib_y(k, x)
    slope = (g.rib_y(k, x + 0.5) - g.rib_y(k, x - 0.5))  # dy/dx of the rib there
    angle = math.atan(slope) + math.pi / 2 + (turn if rng.random() < 0.5 else -turn)  # oblique to the rib
    dx, dy = half_len * g.unit * math.cos(angle), half_len * g.unit * math.sin(angle)
    line = _segment(g, x - dx, y - dy, x + dx, y + dy, 2.5 * g.xx.shape[0] / 128)  # 5 px wide at 128 px
    img += 90 * line
    return line


def _calcification_of_the_aorta(img, g, rng):
    x, y, a, b = g.knob
    start, stop = rng.uniform([-2.6, -0.6], [-1.9, 0.1])  # radians, y down: -pi/2 is the top
    theta = np.arctan2((g.yy - y) / b, (g.xx - x) / a)
    r = np.sqrt(((g.xx - x) / a) ** 2 + ((g.yy - y) / b) ** 2)
    half = 2.5 * g.xx.shape[0] / 128  # 5 px thick at 128 px
    arc = _ramp(half - np.abs(r - 1) * min(a, b)) * ((theta >= start) & (theta <= stop))
    img += 90 * arc
    return arc


def _pneumoperitoneum(img, g, rng):
    shift, half_w, depth = rng.uniform([-0.03, 0.12, 0.065], [0.03, 0.15, 0.08])  # 8-10 px deep at 128 px
    x, _, _ = g.domes["R"]
    s = 1 - ((g.xx - x - shift * g.unit) / (half_w * g.unit)) ** 2  # > 0 under the dome's middle
    top = g.dome_y("R")[None, :]  # the crescent hugs the underside of the dome
    air = _ramp(g.yy - top - 0.5) * _ramp(top + depth * g.unit * s - g.yy, 1.5) * (s > 0)
    img += (20 - img) * 0.85 * air
    return air


# Drawing order: replacing patterns first, additive ones on top, the devices last.
DRAWERS = {
    "Cardiomegaly": _cardiomegaly,
    "Pneumothorax": _pneumothorax,
    "Pleural Effusion": _pleural_effusion,
    "Pneumoperitoneum": _pneumoperitoneum,
    "Lung Opacity": _lung_opacity,
    "Atelectasis": _atelectasis,
    "Nodule": _nodule,
    "Fracture": _fracture,
    "Calcification of the Aorta": _calcification_of_the_aorta,
    "Support Devices": _support_devices,
}
assert set(DRAWERS) == set(FINDINGS)  # every finding has a drawer
