"""One headless ViZDoom game: resized uint8 frames ``[C, H, W]``, game variables as float32, the learning reward
(native + shaping), the native reward and the episode report when an episode ends; with ``settings.game_features``
also each frame's game-feature bits (``DoomGame.labels``, see ``envs/doom/labels.py``)."""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from drl.envs.doom import t_maze
from drl.envs.doom.labels import FeatureLabeler, horizontal_fov
from drl.envs.doom.settings import DoomSettings, DoomShaping, game_variable_name

_AMMO_TYPES = (2, 3, 5, 6)  # AMMO2 bullets, AMMO3 shells, AMMO5 rockets, AMMO6 cells (Arnold's four)


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
        self.block = in_h % out_h == 0 and in_w % out_w == 0
        if self.block:
            self.fy, self.fx = in_h // out_h, in_w // out_w
        else:
            self.ry, self.rxt = _area_matrix(in_h, out_h), _area_matrix(in_w, out_w).T.copy()

    def __call__(self, buf: np.ndarray) -> np.ndarray:
        x = buf[None] if buf.ndim == 2 else np.moveaxis(buf, -1, 0)
        if self.in_hw == self.out_hw:
            return np.ascontiguousarray(x)
        h, w = self.out_hw
        if self.block:  # sum of strided views: ~10x faster than reshape(...).sum(axis=(2, 4)) for 160x120 -> 80x60
            n = self.fy * self.fx
            wide: np.ndarray = x.astype(np.uint16 if n <= 256 else np.uint32)
            acc = wide[:, : h * self.fy : self.fy, : w * self.fx : self.fx].copy()
            for dy in range(self.fy):
                for dx in range(self.fx):
                    if dy or dx:
                        acc += wide[:, dy :: self.fy, dx :: self.fx]
            return ((acc + n // 2) // n).astype(np.uint8)
        y = self.ry @ x.astype(np.float32) @ self.rxt
        return np.clip(np.rint(y), 0, 255).astype(np.uint8)


@dataclass
class DoomStep:
    frame: np.ndarray  # uint8 [C, h, w]: the new frame, or the last one seen when the episode ended
    extras: np.ndarray  # float32 [K]: game variables after the action
    reward: float  # learning reward (native + shaping)
    native_reward: float
    terminated: bool  # death or a non-timeout end (and a deathmatch death, without reset)
    truncated: bool  # time limit
    done: bool  # the episode ended; call reset()
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
        self._vars = [getattr(vzd.GameVariable, game_variable_name(v)) for v in self._var_names]
        assert isinstance(settings.shaping, DoomShaping)  # DoomSettings.__post_init__ turns a dict into one
        self._shaping = settings.shaping
        self._gv = vzd.GameVariable
        g = vzd.DoomGame()
        self._maze = t_maze.VARIANTS[settings.scenario] if self.spec.t_maze else None
        if self._maze is not None:  # no .cfg: the engine's defaults, as the stock scenarios' .cfg files set them
            g.set_doom_scenario_path(str(t_maze.wad_path(settings.scenario)))
            g.set_doom_map(t_maze.CUES[0][0])
            g.set_render_hud(False)
            g.set_episode_start_time(10)
            g.set_living_reward(-0.0001)  # as my_way_home: a small cost of time, +1 for the correct arm
            self._cue_rng = np.random.default_rng(int(seed))
            self.cue = 0
        else:
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
        if settings.max_tics is not None and not 0 < g.get_episode_timeout() <= settings.max_tics:
            g.set_episode_timeout(int(settings.max_tics))  # 0: the scenario has no limit (defend_the_line)
        if settings.crosshair:
            g.set_render_crosshair(True)
        if settings.doom_skill is not None:
            g.set_doom_skill(int(settings.doom_skill))
        # game-feature labels (training targets): the labels buffer, which deathmatch's +viz_nocheat would hide
        self._labeler = None
        if settings.game_features:
            w, h = (int(v) for v in settings.resolution[4:].split("X"))
            self._labeler = FeatureLabeler(settings.game_features, fov=horizontal_fov(w, h))
        game_args = self.spec.game_args
        if self._labeler is not None:
            g.set_labels_buffer_enabled(True)
            if self._labeler.needs_geometry:  # Arnold's enemy: objects and the map's walls, for line of sight
                g.set_objects_info_enabled(True)
                g.set_sectors_info_enabled(True)
            game_args = game_args.replace("+viz_nocheat 1", "")
        if game_args:
            g.add_game_args(game_args)
        g.set_seed(int(seed) % (2**31))
        # Each game gets an engine config file of its own, starting from the engine's defaults and removed at
        # close. The engine writes its archived cvars there at exit and reads them at the next start, so a shared
        # file carried one game's settings into every later game: deathmatch's +cl_run 1 made later T-maze games
        # move twice as fast as the ones their agent trained in (docs/reliability.md). It also keeps
        # _vizdoom.ini out of the working directory (the engine still makes an empty _vizdoom/ there).
        self._config_dir = tempfile.mkdtemp(prefix="drl_vizdoom_")
        weakref.finalize(self, shutil.rmtree, self._config_dir, ignore_errors=True)
        g.set_doom_config_path(os.path.join(self._config_dir, "_vizdoom.ini"))
        # the engine creates ./_vizdoom/ at init unless it exists: two games starting at once in one working
        # directory race on it and one dies ("Failed to create ./_vizdoom/ directory: File exists", SIGSEGV)
        os.makedirs("_vizdoom", exist_ok=True)
        g.init()
        self.game = g
        h, w = g.get_screen_height(), g.get_screen_width()
        self._resize = _AreaResize(h, w, settings.obs_height, settings.obs_width)
        self._last_frame = np.zeros((settings.frame_channels, settings.obs_height, settings.obs_width), np.uint8)
        self.labels = 0  # game-feature bits of the last frame returned (0 when off)
        self._started = False

    # -- helpers
    def _var(self, name: str) -> float:
        return float(self.game.get_game_variable(getattr(self._gv, name)))

    def _extras(self) -> np.ndarray:
        """The agent's extra inputs: the game variables in game units x ``game_variable_scale``."""
        scale = self.settings.game_variable_scale
        return np.array([self.game.get_game_variable(v) * scale for v in self._vars], dtype=np.float32)

    def _grab(self) -> np.ndarray:
        state = self.game.get_state()
        if state is not None and state.screen_buffer is not None:
            self._last_frame = self._resize(state.screen_buffer)
            if self._labeler is not None:
                pose = None
                if self._labeler.needs_geometry:
                    pose = tuple(self._var(v) for v in ("POSITION_X", "POSITION_Y", "POSITION_Z", "ANGLE"))
                self.labels = self._labeler(state, pose)
        return self._last_frame

    def _tracked(self) -> dict[str, Any]:
        """The game variables the shaping terms follow: floats, and ``"ammo"`` a tuple (one per ammo type)."""
        s = self._shaping
        out: dict[str, Any] = {}
        if s.kill:
            out["kill"] = self._var("KILLCOUNT")
        if s.frag:
            out["frag"] = self._var("FRAGCOUNT")
        if s.pickup:
            out["pickup"] = self._var("ITEMCOUNT")
        if s.health_gain or s.injured or s.medikit:
            health = self._var("HEALTH")  # one read serves the three terms
            out["health_gain"] = out["injured"] = out["medikit"] = health
        if s.armor:
            out["armor"] = self._var("ARMOR")
        if s.weapon:
            out["weapon"] = sum(self._var(f"WEAPON{i}") > 0 for i in range(1, 8))
        if s.ammo:
            out["ammo"] = tuple(self._var(f"AMMO{i}") for i in _AMMO_TYPES)
        if s.damage_taken:
            out["damage_taken"] = self._var("DAMAGE_TAKEN")
        if s.ammo_used:
            out["ammo_used"] = sum(self._var(f"AMMO{i}") for i in range(10))
        return out

    # -- API
    def reset(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        g = self.game
        if seed is not None:
            g.set_seed(int(seed) % (2**31))
        if self._maze is not None:  # draw this episode's cue: its map (the maze is the same in both)
            if seed is not None:
                self._cue_rng = np.random.default_rng(int(seed))
            self.cue = int(self._cue_rng.integers(len(t_maze.CUES)))
            g.set_doom_map(t_maze.CUES[self.cue][0])
        if self._started or seed is not None or self._maze is not None:  # a new map needs a new episode
            g.new_episode()
        self._started = True
        if self.spec.bots:
            g.send_game_command("removebots")
            for _ in range(self.settings.num_bots):
                g.send_game_command("addbot")
        self._native, self._length, self._deaths = 0.0, 0, 0
        self.events: Counter[str] = Counter()  # how often each event-based shaping term fired this episode
        self._prev = self._tracked()
        if self._labeler is not None:
            self._labeler.new_episode()
        return self._grab().copy(), self._extras()

    def _shaped(self, reward: float, respawned: bool, dead: bool) -> float:
        """``reward`` plus this step's shaping terms, from the tracked game variables' changes (``DoomShaping``)."""
        s = self._shaping
        cur = self._tracked()
        p = self._prev
        if s.kill:
            reward += s.kill * max(0.0, cur["kill"] - p["kill"])
        if s.frag:
            reward += s.frag * (cur["frag"] - p["frag"])
            self.events["frag" if cur["frag"] >= p["frag"] else "suicide"] += int(abs(cur["frag"] - p["frag"]))
        if s.pickup:
            reward += s.pickup * max(0.0, cur["pickup"] - p["pickup"])
            self.events["pickup"] += int(max(0.0, cur["pickup"] - p["pickup"]))
        if s.health_gain and not respawned:
            reward += s.health_gain * max(0.0, cur["health_gain"] - p["health_gain"])
        if s.damage_taken:
            reward += s.damage_taken * max(0.0, cur["damage_taken"] - p["damage_taken"])
        if s.injured and not respawned and cur["injured"] < p["injured"]:
            reward += s.injured
            self.events["injured"] += 1
        if s.ammo_used and not respawned and cur["ammo_used"] < p["ammo_used"]:
            reward += s.ammo_used
            self.events["ammo_used"] += 1
        if not respawned:  # Arnold's pickups, from game-variable changes
            if s.medikit and cur["medikit"] > p["medikit"]:
                reward += s.medikit
                self.events["medikit"] += 1
            if s.armor and cur["armor"] > p["armor"]:
                reward += s.armor
                self.events["armor"] += 1
            if s.weapon and cur["weapon"] > p["weapon"]:
                reward += s.weapon * (cur["weapon"] - p["weapon"])
                self.events["weapon"] += int(cur["weapon"] - p["weapon"])
            if s.ammo:
                rose = sum(now > before for now, before in zip(cur["ammo"], p["ammo"]))
                reward += s.ammo * rose
                self.events["ammo"] += rose
        if s.death and dead:
            reward += s.death
            self.events["death"] += 1
        reward += s.living
        self._prev = cur
        return reward

    def step(self, action: int) -> DoomStep:
        g, s = self.game, self._shaping
        native = float(g.make_action(self._vectors[int(action)], self.settings.frame_skip))
        finished = g.is_episode_finished()
        arm = None
        if self._maze is not None and not finished:
            arm = self._maze.outcome(self._var("POSITION_X"), self._var("POSITION_Y"))
            if arm is not None:  # an arm's end: +1 when it is the cue's, nothing otherwise; the episode ends
                native += float(arm == self.cue)
                finished = True
        self._native += native
        self._length += 1
        dead = g.is_player_dead()
        respawned = False
        if self.spec.bots and dead and not finished:
            self._deaths += 1
            g.respawn_player()
            respawned = True
        reward = self._shaped(native, respawned, dead) if s.active() else native
        extras = self._extras()
        if not finished:
            return DoomStep(self._grab().copy(), extras, reward, native, respawned, False, False)
        timeout = arm is None and g.is_episode_timeout_reached()
        truncated = bool(timeout and not dead)
        episode = {"return": self._native, "length": self._length}
        for m in self.spec.measures:
            if m == "kills":
                episode["kills"] = self._var("KILLCOUNT")
            elif m == "survival_tics":
                episode["survival_tics"] = int(g.get_episode_time())
            elif m == "success" and self._maze is not None:
                episode["success"] = float(arm == self.cue)
            elif m == "success":
                episode["success"] = float(not timeout and not dead)
            elif m == "frags":
                episode["frags"] = self._var("FRAGCOUNT")
            elif m == "deaths":
                episode["deaths"] = self._deaths + int(dead)
            elif m == "minutes":  # game time (35 tics per second)
                episode["minutes"] = g.get_episode_time() / (35 * 60)
        return DoomStep(self._last_frame.copy(), extras, reward, native, not truncated, truncated, True, episode)

    def close(self) -> None:
        if getattr(self, "game", None) is not None:
            self.game.close()
            del self.game  # a second close() finds none
        shutil.rmtree(self._config_dir, ignore_errors=True)


def summarize_episodes(episodes: list[dict]) -> dict:
    """Deathmatch measures over all the episodes, from the totals as Lample & Chaplot report them: ``kd`` (frags
    per death) and ``frags_per_minute`` (of game time); {} for episodes without frags (``DoomVectorEnv``'s
    ``summarize_episodes``, see ``drl/vec_env.py``)."""
    out: dict[str, float] = {}
    totals = {key: sum(ep[key] for ep in episodes) for key in ("frags", "deaths", "minutes") if key in episodes[0]}
    if "frags" in totals and "deaths" in totals:
        out["kd"] = totals["frags"] / max(totals["deaths"], 1)
    if "frags" in totals and totals.get("minutes"):
        out["frags_per_minute"] = totals["frags"] / totals["minutes"]
    return out
