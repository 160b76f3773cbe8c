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

Bit ``i`` of a frame's label is the ``i``-th name of ``agent.aux.features`` (one byte: at most 8 features).
"""
from __future__ import annotations

import difflib

import numpy as np

#: feature name -> the ViZDoom object categories that count as it
GAME_FEATURES: dict[str, frozenset[str]] = {
    "enemy": frozenset({"Monster", "Player"}),
    "health": frozenset({"Health"}),
    "armor": frozenset({"Armor"}),
    "weapon": frozenset({"Weapon"}),
    "ammo": frozenset({"Ammo"}),
}
#: objects whose category is misleading: health_gathering_supreme's poison vials are "Health" but hurt
EXCLUDED_NAMES = frozenset({"Poison"})
MIN_PIXELS = 1
MAX_FEATURES = 8   # bits of a uint8


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


class FeatureLabeler:
    """``labeler(state) -> int``: the bits of ``features`` in view in a ``vizdoom.GameState`` (labels buffer on)."""

    def __init__(self, features):
        self.features = check_features(features)
        self._bits: dict[tuple[str, str], int] = {}   # (object name, category) -> its bits, computed once

    def bits_of(self, name: str, category: str) -> int:
        key = (name, category)
        if key not in self._bits:
            self._bits[key] = 0 if name in EXCLUDED_NAMES else sum(
                1 << i for i, f in enumerate(self.features) if category in GAME_FEATURES[f])
        return self._bits[key]

    def __call__(self, state) -> int:
        if state.labels_buffer is None:
            raise RuntimeError("ViZDoom returned no labels buffer (is +viz_nocheat set?)")
        pixels = np.bincount(state.labels_buffer.ravel(), minlength=256)
        bits = 0
        for label in state.labels:
            if pixels[label.value] >= MIN_PIXELS:
                bits |= self.bits_of(label.object_name, label.object_category)
        return bits
