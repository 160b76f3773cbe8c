"""ViZDoom behind drl's vector-env contract: games in worker processes, frames through shared memory.

Pieces:
- ``DoomSettings``: a plain dataclass naming the scenario and how it is played (action set, game variables,
  frame size and stacking, reward shaping, timeout). Validated on construction (``ValueError``, one line).
- ``DoomGame``: one headless ``vizdoom.DoomGame`` (PLAYER mode, no window, no sound) that returns resized uint8
  frames ``[C, H, W]``, game variables as float32, the learning reward (native + shaping) and the native reward.
- ``DoomVectorEnv``: N ``DoomGame``s in ``ceil(N / games_per_worker)`` worker processes (``forkserver`` context),
  honouring ``drl.vec_env``. A worker steps its games one after the other and answers once per vector step.
- ``make_doom(settings, num_envs, device, seed)`` and ``make_doom_from_config(env_cfg, ...)``.

Semantics (see ``drl/vec_env.py`` for the contract):
- Death is a termination; the scenario's time limit is a truncation (bootstrap); other ends (basic's monster
  killed, my_way_home's / deadly_corridor's vest reached) are terminations.
- ViZDoom renders no frame after the action that ends an episode, so ``final_obs`` repeats the last observation
  the agent saw (the previous step's ``obs``); ``final_extras`` are the game variables read after that action.
- Deathmatch (bots): the agent respawns at once when killed; that step is ``terminated`` without ``reset``
  (like an Atari life loss), the episode (and ``return``) runs on to the time limit.
- Episode reports (``VecStep.episodes``): ``{"env", "return" (native whole-episode reward), "length" (agent
  steps)}`` plus the scenario measures: ``kills`` (KILLCOUNT), ``survival_tics`` (episode tics),
  ``success`` (1.0 if the episode ended neither by timeout nor by death), ``frags``/``deaths`` (deathmatch).
- Worker failure (process gone, pipe closed, engine error, or no answer within ``step_timeout`` s): the worker's
  process group (worker + engines) is killed, a new worker with new games replaces it, a warning is logged and
  ``worker_restarts`` grows. The running episodes of its games are *dropped*: not reported in ``episodes``; the
  step reports ``reward = 0``, ``reset = True``, ``truncated = True``, ``terminated = False`` (so nothing is
  learnt across the cut and ``final_obs`` is the last observation seen), and ``obs`` is the new game's first frame
  stack.

Frame stacks are kept in the main process (newest frame last, zero-padded at episode start); workers write only
the newest frame. Game variables are raw engine values (health 0-100+, ammo counts, ...), not normalised.
Torch is imported lazily so worker processes never load it.
"""
from __future__ import annotations

import dataclasses
import difflib
import itertools
import logging
import mmap
import multiprocessing as mp
import multiprocessing.connection
import os
import re
import signal
import tempfile
import time
import traceback
import uuid
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from drl.vec_env import VecStep

__all__ = ["DoomSettings", "DoomShaping", "ActionSet", "DoomGame", "DoomVectorEnv", "make_doom",
           "make_doom_from_config", "parse_actions", "SCENARIOS", "BUTTON_ALIASES", "BUTTON_SHORTHANDS",
           "GAME_VARIABLE_ALIASES"]

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------- names

# Binary vizdoom Buttons (the *_DELTA ones are analog and not offered). Each is also accepted lower-cased.
_BINARY_BUTTONS = (
    "ATTACK", "USE", "JUMP", "CROUCH", "TURN180", "ALTATTACK", "RELOAD", "ZOOM", "SPEED", "STRAFE",
    "MOVE_RIGHT", "MOVE_LEFT", "MOVE_BACKWARD", "MOVE_FORWARD", "TURN_RIGHT", "TURN_LEFT", "LOOK_UP",
    "LOOK_DOWN", "MOVE_UP", "MOVE_DOWN", "LAND", *(f"SELECT_WEAPON{i}" for i in range(10)),
    "SELECT_NEXT_WEAPON", "SELECT_PREV_WEAPON", "DROP_SELECTED_WEAPON", "ACTIVATE_SELECTED_ITEM",
    "SELECT_NEXT_ITEM", "SELECT_PREV_ITEM", "DROP_SELECTED_ITEM")

#: readable alias -> vizdoom Button name ("noop" presses nothing)
BUTTON_ALIASES: dict[str, str | None] = {
    "noop": None,
    "move_forward": "MOVE_FORWARD", "move_backward": "MOVE_BACKWARD", "move_left": "MOVE_LEFT",
    "move_right": "MOVE_RIGHT", "turn_left": "TURN_LEFT", "turn_right": "TURN_RIGHT", "attack": "ATTACK",
    "alt_attack": "ALTATTACK", "use": "USE", "speed": "SPEED", "strafe": "STRAFE", "jump": "JUMP",
    "crouch": "CROUCH", "reload": "RELOAD", "zoom": "ZOOM", "look_up": "LOOK_UP", "look_down": "LOOK_DOWN",
    "turn180": "TURN180", "move_up": "MOVE_UP", "move_down": "MOVE_DOWN", "land": "LAND",
    "next_weapon": "SELECT_NEXT_WEAPON", "prev_weapon": "SELECT_PREV_WEAPON",
    **{f"weapon{i}": f"SELECT_WEAPON{i}" for i in range(10)},
    "next_item": "SELECT_NEXT_ITEM", "prev_item": "SELECT_PREV_ITEM", "use_item": "ACTIVATE_SELECTED_ITEM",
    "drop_item": "DROP_SELECTED_ITEM", "drop_weapon": "DROP_SELECTED_WEAPON",
}
_ALL_BUTTON_NAMES: dict[str, str | None] = {**{b.lower(): b for b in _BINARY_BUTTONS}, **BUTTON_ALIASES}

#: shorthand -> the alternatives it expands to (combinatorially, inside a ``+`` combination)
BUTTON_SHORTHANDS: dict[str, tuple[str, ...]] = {
    "turn_lr": ("turn_left", "turn_right"),
    "move_fb": ("move_forward", "move_backward"),
    "move_lr": ("move_left", "move_right"),
    "look_ud": ("look_up", "look_down"),
}

#: readable alias -> vizdoom GameVariable name; any GameVariable name, lower-cased, is accepted too
GAME_VARIABLE_ALIASES: dict[str, str] = {
    "health": "HEALTH", "ammo": "SELECTED_WEAPON_AMMO", "armor": "ARMOR", "kills": "KILLCOUNT",
    "frags": "FRAGCOUNT", "deaths": "DEATHCOUNT", "items": "ITEMCOUNT", "secrets": "SECRETCOUNT",
    "damage_taken": "DAMAGE_TAKEN", "damage_dealt": "DAMAGECOUNT", "hits": "HITCOUNT", "hits_taken": "HITS_TAKEN",
    "weapon": "SELECTED_WEAPON", "dead": "DEAD", "attack_ready": "ATTACK_READY", "on_ground": "ON_GROUND",
    "pos_x": "POSITION_X", "pos_y": "POSITION_Y", "pos_z": "POSITION_Z", "angle": "ANGLE", "pitch": "PITCH",
    "vel_x": "VELOCITY_X", "vel_y": "VELOCITY_Y", "vel_z": "VELOCITY_Z",
}


@dataclass(frozen=True)
class _Scenario:
    cfg: str
    actions: str
    game_variables: tuple[str, ...]
    measures: tuple[str, ...]
    doom_map: str | None = None
    game_args: str = ""
    timeout: int | None = None        # tics; None = the .cfg's
    bots: bool = False                # deathmatch against the engine's bots (respawn on death)


_DM_ARGS = ("-host 1 -deathmatch +sv_forcerespawn 1 +sv_noautoaim 1 +sv_respawnprotect 1 +sv_spawnfarthest 1 "
            "+sv_nocrouch 1 +cl_run 1 +viz_nocheat 1")

#: the scenarios and their defaults (action set, game variables, reported measures)
SCENARIOS: dict[str, _Scenario] = {
    "basic": _Scenario("basic.cfg", "move_left;move_right;attack", ("ammo",), ("kills", "success")),
    "defend_the_center": _Scenario("defend_the_center.cfg", "turn_left;turn_right;attack", ("ammo", "health"),
                                   ("kills", "survival_tics")),
    "defend_the_line": _Scenario("defend_the_line.cfg", "turn_left;turn_right;attack", ("ammo", "health"),
                                 ("kills", "survival_tics")),
    "health_gathering": _Scenario("health_gathering.cfg", "turn_left;turn_right;move_forward;turn_lr+move_forward",
                                  ("health",), ("survival_tics",)),
    "health_gathering_supreme": _Scenario("health_gathering_supreme.cfg",
                                          "turn_left;turn_right;move_forward;turn_lr+move_forward",
                                          ("health",), ("survival_tics",)),
    "my_way_home": _Scenario("my_way_home.cfg", "turn_left;turn_right;move_forward;turn_lr+move_forward", (),
                             ("success",)),
    "deadly_corridor": _Scenario("deadly_corridor.cfg",
                                 "move_left;move_right;attack;move_forward;move_backward;turn_left;turn_right",
                                 ("health", "ammo"), ("kills", "success")),
    # ViZDoom's own deathmatch.wad (a monster arena) has no deathmatch starts and crashes the engine under
    # -deathmatch, so the bot deathmatch plays cig.wad map01 (the ViZDoom competition map), 2 minutes.
    "deathmatch": _Scenario("cig.cfg", "attack;move_fb;move_lr;turn_lr;move_forward+turn_lr;turn_lr+attack;"
                            "move_forward+attack", ("health", "armor", "ammo"), ("frags", "deaths"),
                            doom_map="map01", game_args=_DM_ARGS, timeout=4200, bots=True),
}


def _one_line_list(names) -> str:
    return ", ".join(names)


def parse_actions(spec: str) -> list[tuple[str, tuple[str, ...]]]:
    """``"turn_lr+attack;move_forward"`` -> ``[("turn_left+attack", (aliases...)), ...]``.

    ``;`` separates actions, ``+`` joins buttons pressed together; shorthands (``turn_lr``, ``move_fb``,
    ``move_lr``, ``look_ud``) expand combinatorially. Returns (name, button aliases) per action.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"Doom action set must be a non-empty string like 'turn_left;turn_right;attack', got {spec!r}")
    out: list[tuple[str, tuple[str, ...]]] = []
    seen: set[frozenset] = set()
    for action in spec.split(";"):
        action = action.strip()
        if not action:
            raise ValueError(f"empty action in Doom action set {spec!r} (';;' or a trailing ';')")
        alternatives = []
        for part in action.split("+"):
            part = part.strip().lower()
            if part in BUTTON_SHORTHANDS:
                alternatives.append(BUTTON_SHORTHANDS[part])
            elif part in _ALL_BUTTON_NAMES:
                alternatives.append((part,))
            else:
                close = difflib.get_close_matches(part, list(_ALL_BUTTON_NAMES) + list(BUTTON_SHORTHANDS), n=1)
                raise ValueError(
                    f"unknown Doom button '{part}' in action '{action}'"
                    + (f" (did you mean {close[0]}?)" if close else "") + "; valid: "
                    f"{_one_line_list(list(BUTTON_ALIASES) + list(BUTTON_SHORTHANDS))} "
                    f"(or any binary vizdoom Button name in lower case)")
        for combo in itertools.product(*alternatives):
            key = frozenset(_ALL_BUTTON_NAMES[c] for c in combo) - {None}
            if key in seen:
                raise ValueError(f"Doom action set {spec!r} lists the button combination '{'+'.join(combo)}' twice")
            seen.add(key)
            out.append(("+".join(combo), tuple(combo)))
    return out


@dataclass(frozen=True)
class ActionSet:
    names: list[str]                  # one per action, e.g. "turn_left+attack"
    buttons: list[str]                # vizdoom Button names, in the order the game is told
    vectors: list[list[int]]          # per action, one plain Python int (0/1) per button

    @staticmethod
    def from_spec(spec: str) -> "ActionSet":
        parsed = parse_actions(spec)
        buttons: list[str] = []
        for _, combo in parsed:
            for alias in combo:
                b = _ALL_BUTTON_NAMES[alias]
                if b is not None and b not in buttons:
                    buttons.append(b)
        vectors = []
        for _, combo in parsed:
            pressed = {_ALL_BUTTON_NAMES[a] for a in combo}
            vectors.append([int(b in pressed) for b in buttons])
        return ActionSet([n for n, _ in parsed], buttons, vectors)


def _game_variable_name(name: str) -> str:
    key = name.strip().lower()
    if key in GAME_VARIABLE_ALIASES:
        return GAME_VARIABLE_ALIASES[key]
    import vizdoom as vzd
    upper = key.upper()
    if upper.isidentifier() and isinstance(getattr(vzd.GameVariable, upper, None), vzd.GameVariable):
        return upper
    raise ValueError(f"unknown Doom game variable '{name}'; valid: {_one_line_list(GAME_VARIABLE_ALIASES)} "
                     f"(or any vizdoom GameVariable name in lower case)")


# --------------------------------------------------------------------------------------------------- settings

@dataclass
class DoomShaping:
    """Reward-shaping weights added to the native reward for learning (all 0 = native reward only).

    Each weight multiplies a per-step change: ``kill`` per KILLCOUNT increase, ``frag`` per FRAGCOUNT change,
    ``pickup`` per ITEMCOUNT increase, ``health_gain`` per health point gained (not on respawn),
    ``damage_taken`` per point of damage taken (use a negative weight to penalise), ``death`` once per death
    (negative to penalise), ``living`` every agent step.
    """
    kill: float = 0.0
    frag: float = 0.0
    pickup: float = 0.0
    health_gain: float = 0.0
    damage_taken: float = 0.0
    death: float = 0.0
    living: float = 0.0

    def active(self) -> bool:
        return any(v != 0.0 for v in dataclasses.asdict(self).values())


@dataclass
class DoomSettings:
    scenario: str = "health_gathering"     # one of SCENARIOS
    resolution: str = "RES_160X120"        # render size (vizdoom ScreenResolution name)
    obs_height: int = 60                   # after area resize
    obs_width: int = 80
    gray: bool = True                      # GRAY8 (1 channel) or RGB24 (3 channels)
    frame_skip: int = 4                    # tics per agent step (the action is repeated)
    frame_stack: int = 1                   # frames per observation (1 for recurrent agents, 4 for DQN)
    buttons: str | None = None             # action set, e.g. "turn_lr+attack;move_forward"; None = scenario's
    game_variables: list[str] | str | None = None  # e.g. ["health", "ammo"]; None = scenario's; [] = none
    shaping: DoomShaping | dict = field(default_factory=DoomShaping)
    timeout: int | None = None             # episode time limit in tics; None = scenario's
    num_bots: int = 7                      # deathmatch only: bots added after each new episode
    doom_skill: int | None = None          # 1-5; None = scenario's

    def __post_init__(self):
        self.scenario = str(self.scenario).strip().lower()
        if self.scenario not in SCENARIOS:
            close = difflib.get_close_matches(self.scenario, list(SCENARIOS), n=1)
            raise ValueError(f"unknown Doom scenario '{self.scenario}'" + (f" (did you mean {close[0]}?)" if close
                             else "") + f"; valid: {_one_line_list(SCENARIOS)}")
        import vizdoom as vzd
        self.resolution = str(self.resolution).strip().upper()
        if not (re.fullmatch(r"RES_\d+X\d+", self.resolution) and hasattr(vzd.ScreenResolution, self.resolution)):
            valid = [r for r in dir(vzd.ScreenResolution) if r.startswith("RES_")]
            raise ValueError(f"unknown Doom resolution '{self.resolution}'; valid: {_one_line_list(valid)}")
        for name in ("obs_height", "obs_width", "frame_skip", "frame_stack"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"Doom {name} must be >= 1, got {getattr(self, name)}")
            setattr(self, name, int(getattr(self, name)))
        if isinstance(self.shaping, dict):
            unknown = set(self.shaping) - {f.name for f in dataclasses.fields(DoomShaping)}
            if unknown:
                raise ValueError(f"unknown Doom shaping term(s) {sorted(unknown)}; valid: "
                                 f"{_one_line_list(f.name for f in dataclasses.fields(DoomShaping))}")
            self.shaping = DoomShaping(**{k: float(v) for k, v in self.shaping.items()})
        if isinstance(self.game_variables, str):
            self.game_variables = [v for v in re.split(r"[,;+\s]+", self.game_variables) if v]
        if self.game_variables is not None:
            self.game_variables = [str(v).strip().lower() for v in self.game_variables]
            for v in self.game_variables:
                _game_variable_name(v)
        if self.num_bots < 0:
            raise ValueError(f"Doom num_bots must be >= 0, got {self.num_bots}")
        if self.timeout is not None and int(self.timeout) < 1:
            raise ValueError(f"Doom timeout must be >= 1 tic or None, got {self.timeout}")
        if self.doom_skill is not None and not 1 <= int(self.doom_skill) <= 5:
            raise ValueError(f"Doom doom_skill must be 1-5 or None, got {self.doom_skill}")
        self.action_set()  # validates the buttons

    @property
    def spec(self) -> _Scenario:
        return SCENARIOS[self.scenario]

    def action_set(self) -> ActionSet:
        return ActionSet.from_spec(self.buttons if self.buttons is not None else self.spec.actions)

    def game_variable_names(self) -> list[str]:
        return list(self.game_variables if self.game_variables is not None else self.spec.game_variables)

    @property
    def frame_channels(self) -> int:
        return 1 if self.gray else 3


# --------------------------------------------------------------------------------------------------- one game

def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Rows: output pixels; columns: input pixels; entries: overlap fractions (rows sum to 1)."""
    scale = n_in / n_out
    m = np.zeros((n_out, n_in), dtype=np.float32)
    for o in range(n_out):
        a, b = o * scale, (o + 1) * scale
        for p in range(int(np.floor(a)), min(int(np.ceil(b)), n_in)):
            m[o, p] = (min(b, p + 1) - max(a, p)) / scale
    return m


class _AreaResize:
    """uint8 (H, W) or (H, W, 3) -> uint8 (C, h, w) by area averaging (block mean when the factors are ints)."""

    def __init__(self, in_h: int, in_w: int, out_h: int, out_w: int):
        self.in_hw, self.out_hw = (in_h, in_w), (out_h, out_w)
        self.block = (in_h % out_h == 0 and in_w % out_w == 0)
        if self.block:
            self.fy, self.fx = in_h // out_h, in_w // out_w
        else:
            self.ry, self.rxt = _area_matrix(in_h, out_h), _area_matrix(in_w, out_w).T.copy()

    def __call__(self, buf: np.ndarray) -> np.ndarray:
        x = buf[None] if buf.ndim == 2 else np.moveaxis(buf, -1, 0)
        c = x.shape[0]
        if self.in_hw == self.out_hw:
            return np.ascontiguousarray(x)
        h, w = self.out_hw
        if self.block:  # sum of strided views: ~10x faster than reshape(...).sum(axis=(2, 4)) for 160x120 -> 80x60
            n = self.fy * self.fx
            wide = x.astype(np.uint16 if n <= 256 else np.uint32)
            acc = wide[:, :h * self.fy:self.fy, :w * self.fx:self.fx].copy()
            for dy in range(self.fy):
                for dx in range(self.fx):
                    if dy or dx:
                        acc += wide[:, dy::self.fy, dx::self.fx]
            return ((acc + n // 2) // n).astype(np.uint8)
        y = self.ry @ x.astype(np.float32) @ self.rxt
        return np.clip(np.rint(y), 0, 255).astype(np.uint8)


@dataclass
class DoomStep:
    frame: np.ndarray            # uint8 [C, h, w]: the new frame, or the last one seen when the episode ended
    extras: np.ndarray           # float32 [K]: game variables after the action
    reward: float                # learning reward (native + shaping)
    native_reward: float
    terminated: bool             # death or a non-timeout end (and a deathmatch death, without reset)
    truncated: bool              # time limit
    done: bool                   # the episode ended; call reset()
    episode: dict | None = None  # results when done


class DoomGame:
    """One headless ViZDoom game (use one per process; see the reference's pitfalls)."""

    def __init__(self, settings: DoomSettings, seed: int = 0):
        import vizdoom as vzd

        self.settings, self.spec = settings, settings.spec
        self.actions = settings.action_set()
        self.num_actions = len(self.actions.names)
        self._vectors = self.actions.vectors
        self._var_names = settings.game_variable_names()
        self._vars = [getattr(vzd.GameVariable, _game_variable_name(v)) for v in self._var_names]
        self._shaping: DoomShaping = settings.shaping
        self._gv = vzd.GameVariable
        g = vzd.DoomGame()
        g.load_config(os.path.join(vzd.scenarios_path, self.spec.cfg))
        if self.spec.doom_map:
            g.set_doom_map(self.spec.doom_map)
        g.set_window_visible(False)
        g.set_mode(vzd.Mode.PLAYER)
        g.set_sound_enabled(False)
        g.set_screen_resolution(getattr(vzd.ScreenResolution, settings.resolution))
        g.set_screen_format(vzd.ScreenFormat.GRAY8 if settings.gray else vzd.ScreenFormat.RGB24)
        g.set_available_buttons([getattr(vzd.Button, b) for b in self.actions.buttons])
        g.set_available_game_variables(list(self._vars))
        timeout = settings.timeout if settings.timeout is not None else self.spec.timeout
        if timeout is not None:
            g.set_episode_timeout(int(timeout))
        if settings.doom_skill is not None:
            g.set_doom_skill(int(settings.doom_skill))
        if self.spec.game_args:
            g.add_game_args(self.spec.game_args)
        g.set_seed(int(seed) % (2 ** 31))
        # keep the engine's _vizdoom.ini out of the working directory (it still makes an empty _vizdoom/ there)
        cfg_dir = os.path.join(tempfile.gettempdir(), f"drl_vizdoom_{os.getuid()}")
        os.makedirs(cfg_dir, exist_ok=True)
        g.set_doom_config_path(os.path.join(cfg_dir, "_vizdoom.ini"))
        g.init()
        self.game = g
        h, w = g.get_screen_height(), g.get_screen_width()
        self._resize = _AreaResize(h, w, settings.obs_height, settings.obs_width)
        self._last_frame = np.zeros((settings.frame_channels, settings.obs_height, settings.obs_width), np.uint8)
        self._started = False

    # -- helpers
    def _var(self, name: str) -> float:
        return float(self.game.get_game_variable(getattr(self._gv, name)))

    def _extras(self) -> np.ndarray:
        return np.array([self.game.get_game_variable(v) for v in self._vars], dtype=np.float32)

    def _grab(self) -> np.ndarray:
        state = self.game.get_state()
        if state is not None and state.screen_buffer is not None:
            self._last_frame = self._resize(state.screen_buffer)
        return self._last_frame

    def _tracked(self) -> dict[str, float]:
        s, out = self._shaping, {}
        if s.kill:
            out["kill"] = self._var("KILLCOUNT")
        if s.frag:
            out["frag"] = self._var("FRAGCOUNT")
        if s.pickup:
            out["pickup"] = self._var("ITEMCOUNT")
        if s.health_gain:
            out["health_gain"] = self._var("HEALTH")
        if s.damage_taken:
            out["damage_taken"] = self._var("DAMAGE_TAKEN")
        return out

    # -- API
    def reset(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        g = self.game
        if seed is not None:
            g.set_seed(int(seed) % (2 ** 31))
        if self._started or seed is not None:
            g.new_episode()
        self._started = True
        if self.spec.bots:
            g.send_game_command("removebots")
            for _ in range(self.settings.num_bots):
                g.send_game_command("addbot")
        self._native, self._length, self._deaths = 0.0, 0, 0
        self._prev = self._tracked()
        return self._grab().copy(), self._extras()

    def step(self, action: int) -> DoomStep:
        g, s = self.game, self._shaping
        native = float(g.make_action(self._vectors[int(action)], self.settings.frame_skip))
        self._native += native
        self._length += 1
        finished = g.is_episode_finished()
        dead = g.is_player_dead()
        respawned = False
        if self.spec.bots and dead and not finished:
            self._deaths += 1
            g.respawn_player()
            respawned = True
        reward = native
        if s.active():
            cur = self._tracked()
            p = self._prev
            if s.kill:
                reward += s.kill * max(0.0, cur["kill"] - p["kill"])
            if s.frag:
                reward += s.frag * (cur["frag"] - p["frag"])
            if s.pickup:
                reward += s.pickup * max(0.0, cur["pickup"] - p["pickup"])
            if s.health_gain and not respawned:
                reward += s.health_gain * max(0.0, cur["health_gain"] - p["health_gain"])
            if s.damage_taken:
                reward += s.damage_taken * max(0.0, cur["damage_taken"] - p["damage_taken"])
            if s.death and dead:
                reward += s.death
            reward += s.living
            self._prev = cur
        extras = self._extras()
        if not finished:
            return DoomStep(self._grab().copy(), extras, reward, native, respawned, False, False)
        timeout = g.is_episode_timeout_reached()
        truncated = bool(timeout and not dead)
        episode = {"return": self._native, "length": self._length}
        for m in self.spec.measures:
            if m == "kills":
                episode["kills"] = self._var("KILLCOUNT")
            elif m == "survival_tics":
                episode["survival_tics"] = int(g.get_episode_time())
            elif m == "success":
                episode["success"] = float(not timeout and not dead)
            elif m == "frags":
                episode["frags"] = self._var("FRAGCOUNT")
            elif m == "deaths":
                episode["deaths"] = self._deaths + int(dead)
        return DoomStep(self._last_frame.copy(), extras, reward, native, not truncated, truncated, True, episode)

    def close(self) -> None:
        if getattr(self, "game", None) is not None:
            self.game.close()
            self.game = None


# --------------------------------------------------------------------------------------------------- workers

@dataclass(frozen=True)
class _Layout:
    n: int
    c: int
    h: int
    w: int
    k: int

    @property
    def frame_bytes(self) -> int:
        return self.n * self.c * self.h * self.w

    @property
    def extras_offset(self) -> int:
        return (self.frame_bytes + 63) // 64 * 64

    @property
    def size(self) -> int:
        return self.extras_offset + 2 * self.n * max(self.k, 1) * 4

    def views(self, buf) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        frames = np.frombuffer(buf, np.uint8, self.frame_bytes, 0).reshape(self.n, self.c, self.h, self.w)
        ex = np.frombuffer(buf, np.float32, 2 * self.n * max(self.k, 1), self.extras_offset)
        ex = ex.reshape(2, self.n, max(self.k, 1))[:, :, :self.k]
        return frames, ex[0], ex[1]


def _engine_children() -> tuple[list[int], list[str]]:
    """PIDs and instance ids of the ViZDoom engine processes started by this process."""
    pids, ids = [], []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != me:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if b"+viz_instance_id" in argv:
            pids.append(int(entry))
            ids.append(argv[argv.index(b"+viz_instance_id") + 1].decode())
    return pids, ids


def _remove_engine_files(instance_ids) -> None:
    for iid in instance_ids:
        if not re.fullmatch(r"[A-Za-z0-9]+", iid):
            continue
        for prefix in ("ViZDoomSM", "ViZDoomMQCtr", "ViZDoomMQDoom"):
            try:
                os.unlink(f"/dev/shm/{prefix}{iid}")
            except OSError:
                pass


def _worker_main(conn, shm_path: str, layout: _Layout, slots: list[int], settings: DoomSettings, seeds: list[int],
                 workdir: str) -> None:
    """The games of env rows ``slots``, stepped one after the other. Commands: ("step", [a per game]),
    ("reset", [seed|None per game]), ("close",); one reply per command."""
    try:
        os.setsid()  # own process group (worker + engine), so the parent can kill both at once
    except OSError:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def _term(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _term)
    # The engine is a child process: it must not inherit our pipe, or the parent would never see EOF on it
    # when this worker dies while the engine lives on.
    for fd_name in os.listdir("/proc/self/fd"):
        try:
            fd = int(fd_name)
            if fd > 2:
                os.set_inheritable(fd, False)
        except (ValueError, OSError):
            pass
    games: list[DoomGame] = []
    try:
        os.makedirs(workdir, exist_ok=True)
        os.chdir(workdir)  # the engine writes _vizdoom.ini and crash logs to the working directory
        fd = os.open(shm_path, os.O_RDWR)
        buf = mmap.mmap(fd, layout.size)
        os.close(fd)
        frames, extras, final_extras = layout.views(buf)
        for slot, seed in zip(slots, seeds):
            games.append(DoomGame(settings, seed=seed))
            frames[slot], extras[slot] = games[-1].reset()
        engine_pids, engine_ids = _engine_children()
        conn.send(("ready", os.getpid(), engine_pids, engine_ids))
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break  # parent gone
            cmd = msg[0]
            if cmd == "step":
                results = []
                for slot, game, action in zip(slots, games, msg[1]):
                    r = game.step(action)
                    if r.done:
                        final_extras[slot] = r.extras
                        frames[slot], extras[slot] = game.reset()
                    else:
                        frames[slot], extras[slot] = r.frame, r.extras
                    results.append((r.reward, r.native_reward, r.terminated, r.truncated, r.done, r.episode))
                conn.send(("ok", results))
            elif cmd == "reset":
                for slot, game, seed in zip(slots, games, msg[1]):
                    frames[slot], extras[slot] = game.reset(seed)
                conn.send(("ok",))
            elif cmd == "close":
                break
    except SystemExit:
        pass
    except BaseException as e:  # report, then exit: the parent restarts us or raises
        try:
            conn.send(("error", f"{type(e).__name__}: {e}", traceback.format_exc()))
        except Exception:
            pass
    finally:
        for game in games:
            try:
                game.close()
            except Exception:
                pass
        try:
            conn.close()
        except Exception:
            pass


class _Pool:
    """Process handles, pipes and the shared-memory file; closed by DoomVectorEnv.close or at exit."""

    def __init__(self, n: int):
        self.procs: list[Any] = [None] * n
        self.conns: list[Any] = [None] * n
        self.engine_ids: list[list[str]] = [[] for _ in range(n)]
        self.shm_path: str | None = None
        self.closed = False

    def kill(self, i: int) -> None:
        p, c = self.procs[i], self.conns[i]
        if c is not None:
            try:
                c.close()
            except Exception:
                pass
        if p is not None:
            _kill_group(p)
            try:
                p.join(timeout=5)
            except Exception:
                pass
        _remove_engine_files(self.engine_ids[i])
        self.procs[i], self.conns[i], self.engine_ids[i] = None, None, []

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for c in self.conns:  # ask everyone first (games close in parallel) ...
            if c is not None:
                try:
                    c.send(("close",))
                except Exception:
                    pass
        deadline = time.monotonic() + 5.0
        for p in self.procs:
            if p is not None:
                p.join(timeout=max(0.0, deadline - time.monotonic()))
        for i in range(len(self.procs)):  # ... then make sure: kill the group (worker + engine)
            self.kill(i)
        if self.shm_path:
            try:
                os.unlink(self.shm_path)
            except OSError:
                pass


def _kill_group(p) -> None:
    pid = p.pid
    if pid is None:
        return
    try:
        os.killpg(pid, signal.SIGKILL)  # the worker called setsid(): its pgid is its pid
    except (ProcessLookupError, PermissionError, OSError):
        pass
    try:
        if p.is_alive():
            p.kill()
    except Exception:
        pass


def _context():
    try:
        ctx = mp.get_context("forkserver")
    except ValueError:  # pragma: no cover - platforms without forkserver
        return mp.get_context("spawn")
    # Workers fork from the server with numpy and vizdoom already imported (only effective before the server
    # starts; "__main__" is the default preload and stays).
    ctx.set_forkserver_preload(["__main__", __name__])
    return ctx


# --------------------------------------------------------------------------------------------------- vector env

class DoomVectorEnv:
    """N ViZDoom games in worker processes (``games_per_worker`` each) behind ``drl.vec_env.VectorEnv`` (see the
    module docstring)."""

    def __init__(self, settings: DoomSettings, num_envs: int, device="cpu", seed: int = 0,
                 step_timeout: float = 10.0, init_timeout: float = 120.0, games_per_worker: int = 1):
        import torch

        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.settings = settings
        self.num_envs = int(num_envs)
        if int(games_per_worker) < 1:
            raise ValueError(f"games_per_worker must be >= 1, got {games_per_worker}")
        # worker w steps the games of env rows slots[w] in turn: fewer workers, fewer pipe round trips per step
        g = min(int(games_per_worker), self.num_envs)
        self.games_per_worker = g
        self._slots = [list(range(w, min(w + g, self.num_envs))) for w in range(0, self.num_envs, g)]
        self.num_workers = len(self._slots)
        self.device = torch.device(device)
        self.seed = int(seed)
        self.step_timeout = float(step_timeout)
        self.init_timeout = float(init_timeout)
        actions = settings.action_set()
        self.action_names = list(actions.names)
        self.num_actions = len(self.action_names)
        self.game_variable_names = settings.game_variable_names()
        self.num_extras = len(self.game_variable_names)
        self.frame_stack = settings.frame_stack
        self.frame_channels = settings.frame_channels
        self.obs_shape = (self.frame_stack * self.frame_channels, settings.obs_height, settings.obs_width)
        self.worker_restarts = 0
        self.episodes_dropped = 0   # running episodes lost with a failed worker (never reported)
        self._starts = 0
        self._layout = _Layout(self.num_envs, self.frame_channels, settings.obs_height, settings.obs_width,
                               self.num_extras)
        self._pool = _Pool(self.num_workers)
        self._finalizer = weakref.finalize(self, self._pool.close)
        shm_dir = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
        path = os.path.join(shm_dir, f"drl_doom_{os.getpid()}_{uuid.uuid4().hex[:12]}")
        with open(path, "wb") as f:
            f.truncate(self._layout.size)
        self._pool.shm_path = path
        fd = os.open(path, os.O_RDWR)
        self._mmap = mmap.mmap(fd, self._layout.size)
        os.close(fd)
        self._frames, self._extras_np, self._final_extras_np = self._layout.views(self._mmap)
        self._workdir = os.path.join(tempfile.gettempdir(), f"drl_vizdoom_{os.getuid()}")
        self._ctx = _context()
        try:
            self._start_workers(list(range(self.num_workers)))
        except BaseException:
            self.close()
            raise
        self._fresh = True  # workers just started their first episode
        self._in_flight = None  # (pending pipes, failed workers) of a step sent but not yet collected
        self._stack = torch.zeros((self.num_envs, *self.obs_shape), dtype=torch.uint8)
        self._last_extras = torch.zeros((self.num_envs, self.num_extras), dtype=torch.float32)

    # -- worker management
    def _worker_seed(self, i: int) -> int:
        return (self.seed * 1_000_003 + i * 7_919 + self._starts * 104_729) % (2 ** 31)

    def _start_workers(self, indices: list[int]) -> None:
        """Start workers ``indices`` (each runs the games of its env rows ``self._slots[w]``)."""
        pending = {}
        for i in indices:
            parent, child = self._ctx.Pipe(duplex=True)
            seeds = []
            for env in self._slots[i]:
                seeds.append(self._worker_seed(env))
                self._starts += 1
            p = self._ctx.Process(target=_worker_main, name=f"doom-worker-{i}", daemon=True,
                                  args=(child, self._pool.shm_path, self._layout, self._slots[i], self.settings,
                                        seeds, self._workdir))
            p.start()
            child.close()
            self._pool.procs[i], self._pool.conns[i] = p, parent
            pending[parent] = i
        deadline = time.monotonic() + self.init_timeout
        while pending:
            ready = mp.connection.wait(list(pending), timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                raise RuntimeError(f"Doom worker(s) {sorted(pending.values())} did not start within "
                                   f"{self.init_timeout:.0f} s")
            for c in ready:
                i = pending.pop(c)
                try:
                    msg = c.recv()
                except (EOFError, OSError):
                    code = self._pool.procs[i].exitcode
                    raise RuntimeError(f"Doom worker {i} died while starting (exit code {code})") from None
                if msg[0] != "ready":
                    raise RuntimeError(f"Doom worker {i} failed to start the game: {msg[1]}\n{msg[2]}")
                self._pool.engine_ids[i] = list(msg[3])

    def _restart(self, failed: dict[int, str]) -> None:
        for i, why in sorted(failed.items()):
            pid = self._pool.procs[i].pid if self._pool.procs[i] is not None else None
            self._pool.kill(i)
            self.worker_restarts += 1
            logger.warning("Doom worker %d (pid %s) %s; restarting it with new games (their episodes are dropped, "
                           "reported as a truncated reset)", i, pid, why)
        last_error = None
        for attempt in range(3):
            try:
                self._start_workers(sorted(failed))
                return
            except RuntimeError as e:
                last_error = e
                for i in failed:
                    self._pool.kill(i)
        raise RuntimeError(f"could not restart Doom worker(s) {sorted(failed)}: {last_error}")

    def _exchange(self, messages: list[tuple]) -> tuple[list, dict[int, str]]:
        """Send every worker its message, then collect all answers (the workers run in parallel).
        Replies and failures are indexed by worker."""
        return self._collect(*self._send(messages))

    def _send(self, messages: list[tuple]) -> tuple[dict, dict[int, str]]:
        failed: dict[int, str] = {}
        pending = {}
        for i, msg in enumerate(messages):
            c = self._pool.conns[i]
            try:
                c.send(msg)
                pending[c] = i
            except (OSError, EOFError, ValueError):
                failed[i] = "could not be reached (pipe closed)"
        return pending, failed

    def _collect(self, pending: dict, failed: dict[int, str]) -> tuple[list, dict[int, str]]:
        replies: list = [None] * self.num_workers
        deadline = time.monotonic() + self.step_timeout
        while pending:
            ready = mp.connection.wait(list(pending), timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                for i in pending.values():
                    failed[i] = f"did not answer within {self.step_timeout:g} s"
                break
            for c in ready:
                i = pending.pop(c)
                try:
                    msg = c.recv()
                except (EOFError, OSError):
                    p = self._pool.procs[i]
                    p.join(timeout=0.5)
                    failed[i] = f"died (exit code {p.exitcode})"
                    continue
                if msg[0] == "error":
                    failed[i] = f"failed: {msg[1]}"
                    continue
                replies[i] = msg
        return replies, failed

    # -- contract
    def reset(self, seed: int | None = None) -> "VecStep":
        import torch

        from drl.vec_env import VecStep

        self._check_open()
        if self._in_flight is not None:  # a step was sent and never collected: drain it first
            in_flight, self._in_flight = self._in_flight, None
            _, failed = self._collect(*in_flight)
            if failed:
                self._restart(failed)
        if not (self._fresh and seed is None):
            if seed is not None:
                self.seed = int(seed)
            msgs = [("reset", [None if seed is None else (self.seed * 1_000_003 + i * 7_919) % (2 ** 31)
                               for i in slots]) for slots in self._slots]
            _, failed = self._exchange(msgs)
            if failed:
                self._restart(failed)
        self._fresh = False
        n, c = self.num_envs, self.frame_channels
        stack = torch.zeros((n, *self.obs_shape), dtype=torch.uint8)
        stack[:, -c:] = torch.from_numpy(self._frames.copy())
        self._stack = stack
        extras = torch.from_numpy(self._extras_np.copy())
        self._last_extras = extras
        dev = self.device
        false = torch.zeros(n, dtype=torch.bool, device=dev)
        return VecStep(obs=stack.to(dev), reward=torch.zeros(n, dtype=torch.float32, device=dev),
                       terminated=false, truncated=false.clone(),
                       reset=torch.ones(n, dtype=torch.bool, device=dev),
                       extras=extras.to(dev) if self.num_extras else None)

    def step(self, actions: "torch.Tensor") -> "VecStep":
        # drl.vec_env.AsyncStepping.step, not inherited: importing drl.vec_env would load torch into the workers
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions: "torch.Tensor") -> None:
        """Send each worker its games' actions; they step while the caller works until ``step_wait``."""
        import torch

        self._check_open()
        if self._in_flight is not None:
            raise RuntimeError("step_async() twice without step_wait()")
        self._fresh = False
        acts = [int(a) for a in torch.as_tensor(actions).reshape(-1).tolist()]  # plain ints for vizdoom
        if len(acts) != self.num_envs:
            raise ValueError(f"expected {self.num_envs} actions, got {len(acts)}")
        bad = [a for a in acts if not 0 <= a < self.num_actions]
        if bad:
            raise ValueError(f"Doom actions must be in [0, {self.num_actions}), got {bad[0]}")
        self._in_flight = self._send([("step", [acts[i] for i in slots]) for slots in self._slots])

    def step_wait(self) -> "VecStep":
        import torch

        from drl.vec_env import VecStep

        self._check_open()
        if self._in_flight is None:
            raise RuntimeError("step_wait() without step_async()")
        in_flight, self._in_flight = self._in_flight, None
        replies, failed_workers = self._collect(*in_flight)
        if failed_workers:
            self._restart(failed_workers)
        failed = {i for w in failed_workers for i in self._slots[w]}
        n, c = self.num_envs, self.frame_channels
        reward = np.zeros(n, np.float32)
        terminated = np.zeros(n, bool)
        truncated = np.zeros(n, bool)
        reset = np.zeros(n, bool)
        episodes = []
        for i in sorted(failed):
            truncated[i] = reset[i] = True
            self.episodes_dropped += 1
        for w, msg in enumerate(replies):
            if w in failed_workers:
                continue
            for i, (r, _native, term, trunc, done, episode) in zip(self._slots[w], msg[1]):
                reward[i], terminated[i], truncated[i], reset[i] = r, term, trunc, done
                if episode is not None:
                    episodes.append({"env": i, **episode})
        episodes.sort(key=lambda ep: ep["env"])
        frames = torch.from_numpy(self._frames.copy())
        extras = torch.from_numpy(self._extras_np.copy())
        prev = self._stack
        if self.frame_stack == 1:
            stack = frames
        else:
            stack = torch.empty_like(prev)
            stack[:, :-c] = prev[:, c:]
            stack[:, -c:] = frames
        any_reset = bool(reset.any())
        final_obs = final_extras = None
        if any_reset:
            idx = torch.from_numpy(np.nonzero(reset)[0])
            if self.frame_stack > 1:
                stack[idx, :-c] = 0
            final_extras = self._last_extras.clone()
            normal = [i for i in np.nonzero(reset)[0] if i not in failed]
            if normal:
                nidx = torch.as_tensor(normal)
                final_extras[nidx] = torch.from_numpy(self._final_extras_np[normal].copy())
        self._stack = stack
        self._last_extras = extras
        dev = self.device
        has_extras = self.num_extras > 0
        return VecStep(
            obs=stack.to(dev), reward=torch.from_numpy(reward).to(dev),
            terminated=torch.from_numpy(terminated).to(dev), truncated=torch.from_numpy(truncated).to(dev),
            reset=torch.from_numpy(reset).to(dev),
            final_obs=prev.to(dev) if any_reset else None,
            extras=extras.to(dev) if has_extras else None,
            final_extras=final_extras.to(dev) if (any_reset and has_extras) else None,
            episodes=episodes)

    def worker_pids(self) -> list[int]:
        return [p.pid for p in self._pool.procs if p is not None]

    def _check_open(self) -> None:
        if self._pool.closed:
            raise RuntimeError("DoomVectorEnv is closed")

    def close(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is None:
            return
        self._finalizer()  # runs _pool.close once (also registered for interpreter exit)
        # views into the mapping must go before the mapping can be closed
        self._frames = self._extras_np = self._final_extras_np = None
        m = getattr(self, "_mmap", None)
        if m is not None:
            try:
                m.close()
            except BufferError:
                pass
            self._mmap = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------------------------------- factories

def make_doom(settings: DoomSettings | dict | None, num_envs: int, device="cpu", seed: int = 0,
              **kwargs) -> DoomVectorEnv:
    """Build a ``DoomVectorEnv``; ``settings`` may be a ``DoomSettings``, a dict of its fields, or None."""
    if settings is None:
        settings = DoomSettings()
    elif isinstance(settings, dict):
        settings = _settings_from_dict(settings)
    return DoomVectorEnv(settings, num_envs, device=device, seed=seed, **kwargs)


def _settings_from_dict(d: dict) -> DoomSettings:
    names = {f.name for f in dataclasses.fields(DoomSettings)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown Doom setting(s) {sorted(unknown)}; valid: {_one_line_list(sorted(names))}")
    return DoomSettings(**d)


def make_doom_from_config(cfg, num_envs: int, device, seed: int) -> DoomVectorEnv:
    """From ``drl.config.EnvConfig``: ``cfg.doom`` holds DoomSettings fields; frame_skip/frame_stack default to
    the env section's own."""
    from drl.config import ConfigError

    fields = {"frame_skip": cfg.frame_skip, "frame_stack": cfg.frame_stack, **dict(cfg.doom)}
    games_per_worker = fields.pop("games_per_worker", None)
    if games_per_worker is None:  # as many workers as cores, at most one game each when there are enough cores
        games_per_worker = -(-num_envs // max(1, len(os.sched_getaffinity(0))))
    if not isinstance(games_per_worker, int) or isinstance(games_per_worker, bool) or games_per_worker < 1:
        raise ConfigError(f"env.doom.games_per_worker must be a whole number >= 1, got {games_per_worker!r}")
    try:
        settings = _settings_from_dict(fields)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"env.doom: {e}") from None
    return DoomVectorEnv(settings, num_envs, device=device, seed=seed, games_per_worker=games_per_worker)
