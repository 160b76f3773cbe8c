"""Game features (Lample & Chaplot 2017): per frame, is an object of each category in view? Training targets of
the auxiliary head (``agent.aux.features``); never an input of the agent.

A feature is a set of ViZDoom object categories (``Label.object_category``, assigned by the engine from the actor's
class). Names seen in the scenarios: enemy = ``Cacodemon`` (basic), ``MarineChainsawVzd``/``Demon``
(defend_the_center), ``DoomImp`` (defend_the_line), ``Zombieman``/``ShotgunGuy``/``ChaingunGuy``
(deadly_corridor), ``DoomPlayer`` bots of category ``Player`` (deathmatch; the agent itself is ``Self``, its weapon
sprite); health = ``Medikit``, ``CustomMedikit`` (health_gathering[_supreme]); armor = ``GreenArmor``,
``BlueArmor``; ammo = ``Clip``, ``RocketAmmo``. Arnold counts armor as a health item; here it is its own feature.

In view (drl's rule): at least ``MIN_PIXELS`` (1) pixels of the object drawn in the labels buffer at render
resolution. The buffer, not the label list, decides: ViZDoom lists some objects that have no visible pixel (hidden
behind a wall or another sprite). This is drl's own approximation, not Arnold's rule: Arnold (Lample & Chaplot's
code) reads the features from bits of the ``USER1`` game variable, which the ACS scripts of his own maps set (for
enemy: a bot in line of sight within the field of view); a labels-buffer test (``np.any`` per object type) appears
there only in a debugging branch.

Two features follow Arnold's meaning, computed from the engine rather than from a map script:
- ``enemy``: a monster or another player (a bot) within the horizontal field of view and in line of sight: the
  sight line from the player's eye to its middle passes every map line it crosses through that line's opening
  (between the higher floor and the lower ceiling of its two sides; objects and sectors info, the player's pose
  from POSITION_X/Y/Z and ANGLE), as Doom's own sight check does. The field of view is 90 degrees at 4:3 and wider at wider renders (ZDoom keeps
  the vertical one: 2·atan(tan 45° · (w/h) / (4/3)), 106° at 16:9).
- ``target``: an enemy is under the crosshair: a monster's or bot's pixel in the labels buffer's centre column.
``enemy_drawn`` is drl's earlier rule (at least one pixel of a monster or bot drawn), kept for the runs made with it.

Bit ``i`` of a frame's label is the ``i``-th name of ``agent.aux.features`` (one byte: at most 8 features).
"""

from __future__ import annotations

import difflib

import numpy as np

#: feature name -> the ViZDoom object categories that count as it
ENEMY_CATEGORIES = frozenset({"Monster", "Player"})
#: feature name -> the ViZDoom object categories that count as it (``enemy`` and ``target``: see the module doc)
GAME_FEATURES: dict[str, frozenset[str]] = {
    "enemy": ENEMY_CATEGORIES,
    "health": frozenset({"Health"}),
    "armor": frozenset({"Armor"}),
    "weapon": frozenset({"Weapon"}),
    "ammo": frozenset({"Ammo"}),
    "target": ENEMY_CATEGORIES,
    "enemy_drawn": ENEMY_CATEGORIES,
}
#: objects whose category is misleading: health_gathering_supreme's poison vials are "Health" but hurt
EXCLUDED_NAMES = frozenset({"Poison"})
MIN_PIXELS = 1
MAX_FEATURES = 8  # bits of a uint8


def check_features(names) -> list[str]:
    """``names`` as a list, or ``ValueError`` (one line) naming an unknown or repeated feature."""
    names = list(names)
    for name in names:
        if name not in GAME_FEATURES:
            close = difflib.get_close_matches(str(name), list(GAME_FEATURES), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ValueError(f"unknown game feature '{name}'{hint}; valid: {', '.join(GAME_FEATURES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"game features {names} name one twice")
    if len(names) > MAX_FEATURES:
        raise ValueError(f"at most {MAX_FEATURES} game features, got {len(names)}")
    return names


#: features decided by their own rule, not by "a pixel of the category drawn"
_GEOMETRY, _CROSSHAIR = "enemy", "target"


def horizontal_fov(width: int, height: int) -> float:
    """Degrees: ZDoom's 90 at 4:3, widened at wider aspect ratios (the vertical field of view is kept)."""
    return float(np.degrees(2 * np.arctan(np.tan(np.radians(45)) * (width / height) / (4 / 3))))


EYE_HEIGHT, TARGET_HEIGHT = 41.0, 28.0  # Doom's view height above the floor; the middle of a 56-unit player


def map_walls(sectors) -> tuple[np.ndarray, np.ndarray]:
    """The map's lines from ViZDoom's sectors info: segments [L, 4] (x1, y1, x2, y2) and the height of the opening
    through each [L, 2] (lowest z, highest z that sight passes: the higher floor and the lower ceiling of the two
    sides; a one-sided or blocking line has an empty opening)."""
    sides: dict[tuple, list] = {}
    for sector in sectors:
        for ln in sector.lines:
            key = tuple(sorted([(ln.x1, ln.y1), (ln.x2, ln.y2)]))
            entry = sides.setdefault(key, [(ln.x1, ln.y1, ln.x2, ln.y2), ln.is_blocking, []])
            entry[2].append((sector.floor_height, sector.ceiling_height))
    segments, openings = [], []
    for segment, blocking, heights in sides.values():
        segments.append(segment)
        if blocking or len(heights) < 2:
            openings.append((np.inf, -np.inf))
        else:
            openings.append((max(f for f, _ in heights), min(c for _, c in heights)))
    return np.array(segments, dtype=np.float64).reshape(-1, 4), np.array(openings, dtype=np.float64).reshape(-1, 2)


def in_sight(
    player: tuple[float, ...], targets: np.ndarray, walls: tuple[np.ndarray, np.ndarray], fov: float
) -> np.ndarray:
    """bool [K]: each target (x, y, z) [K, 3] lies within ``fov`` degrees of the player's facing (``player`` = x, y,
    z, angle in degrees, Doom's convention: 0 = east, counter-clockwise) and the sight line from the player's eye
    to the target's middle passes every line it crosses through that line's opening (``map_walls``)."""
    px, py, pz, angle = player
    d = targets[:, :2] - np.array([px, py])
    rel = (np.degrees(np.arctan2(d[:, 1], d[:, 0])) - angle + 180.0) % 360.0 - 180.0
    visible = np.abs(rel) <= fov / 2
    segments, openings = walls
    if len(segments) and visible.any():
        a, e = segments[:, :2], segments[:, 2:] - segments[:, :2]  # wall start [L, 2], direction [L, 2]
        cross = lambda u, v: u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]  # noqa: E731
        denom = cross(d[:, None, :], e[None])  # [K, L]; 0 = parallel
        ap = a[None] - np.array([px, py])  # player -> wall start
        with np.errstate(divide="ignore", invalid="ignore"):
            t = cross(ap, e[None]) / denom  # along the sight line, 0..1 between the two
            u = cross(ap, d[:, None, :]) / denom  # along the wall, 0..1 between its ends
        crosses = (denom != 0) & (t > 0) & (t < 1) & (u >= 0) & (u <= 1)
        eye = pz + EYE_HEIGHT
        z = eye + t * (targets[:, 2:3] + TARGET_HEIGHT - eye)  # the sight line's height where it crosses
        blocked = crosses & ((z < openings[None, :, 0]) | (z > openings[None, :, 1]))
        visible &= ~blocked.any(1)
    return visible


class FeatureLabeler:
    """``labeler(state, pose) -> int``: the bits of ``features`` in a ``vizdoom.GameState`` (labels buffer on; for
    ``enemy`` also objects and sectors info, and ``pose`` = the player's (x, y, z, angle))."""

    def __init__(self, features, fov: float = 90.0):
        self.features = check_features(features)
        self.fov = fov
        self.needs_geometry = _GEOMETRY in self.features
        self._bits: dict[tuple[str, str], int] = {}  # (object name, category) -> its pixel-rule bits, computed once
        self._walls: tuple | None = None  # the map's lines and openings, read once per episode

    def new_episode(self) -> None:
        self._walls = None

    def bits_of(self, name: str, category: str) -> int:
        """The bits this object sets by the pixel rule (every feature but ``enemy`` and ``target``)."""
        key = (name, category)
        if key not in self._bits:
            self._bits[key] = (
                0
                if name in EXCLUDED_NAMES
                else sum(
                    1 << i
                    for i, f in enumerate(self.features)
                    if f not in (_GEOMETRY, _CROSSHAIR) and category in GAME_FEATURES[f]
                )
            )
        return self._bits[key]

    def __call__(self, state, pose: tuple[float, ...] | None = None) -> int:
        if state.labels_buffer is None:
            raise RuntimeError("ViZDoom returned no labels buffer (is +viz_nocheat set?)")
        buffer = state.labels_buffer
        pixels = np.bincount(buffer.ravel(), minlength=256)
        bits = 0
        for label in state.labels:
            if pixels[label.value] >= MIN_PIXELS:
                bits |= self.bits_of(label.object_name, label.object_category)
        if _CROSSHAIR in self.features:
            column = set(np.unique(buffer[:, buffer.shape[1] // 2]).tolist())
            if any(label.value in column and label.object_category in ENEMY_CATEGORIES for label in state.labels):
                bits |= 1 << self.features.index(_CROSSHAIR)
        if self.needs_geometry and pose is not None and self._enemy_in_sight(state, pose):
            bits |= 1 << self.features.index(_GEOMETRY)
        return bits

    def _enemy_in_sight(self, state, pose) -> bool:
        enemies = np.array(
            [
                (o.position_x, o.position_y, o.position_z)
                for o in state.objects
                if o.category in ENEMY_CATEGORIES and o.name not in EXCLUDED_NAMES
            ],
            dtype=np.float64,
        )
        if not len(enemies):
            return False
        if self._walls is None:
            self._walls = map_walls(state.sectors)
        return bool(in_sight(pose, enemies, self._walls, self.fov).any())
