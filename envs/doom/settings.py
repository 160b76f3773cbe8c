"""Doom settings: the scenario table, button and game-variable names, action sets, ``DoomSettings`` (validated on
construction: ``ValueError``, one line) and its construction from a dict or from a config's ``env`` section."""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import re
from dataclasses import dataclass, field

from drl.envs.doom.labels import check_features

# --------------------------------------------------------------------------------------------------- names

# Binary vizdoom Buttons (the *_DELTA ones are analog and not offered). Each is also accepted lower-cased.
_BINARY_BUTTONS = (
    "ATTACK",
    "USE",
    "JUMP",
    "CROUCH",
    "TURN180",
    "ALTATTACK",
    "RELOAD",
    "ZOOM",
    "SPEED",
    "STRAFE",
    "MOVE_RIGHT",
    "MOVE_LEFT",
    "MOVE_BACKWARD",
    "MOVE_FORWARD",
    "TURN_RIGHT",
    "TURN_LEFT",
    "LOOK_UP",
    "LOOK_DOWN",
    "MOVE_UP",
    "MOVE_DOWN",
    "LAND",
    *(f"SELECT_WEAPON{i}" for i in range(10)),
    "SELECT_NEXT_WEAPON",
    "SELECT_PREV_WEAPON",
    "DROP_SELECTED_WEAPON",
    "ACTIVATE_SELECTED_ITEM",
    "SELECT_NEXT_ITEM",
    "SELECT_PREV_ITEM",
    "DROP_SELECTED_ITEM",
)

#: readable alias -> vizdoom Button name ("noop" presses nothing)
BUTTON_ALIASES: dict[str, str | None] = {
    "noop": None,
    "move_forward": "MOVE_FORWARD",
    "move_backward": "MOVE_BACKWARD",
    "move_left": "MOVE_LEFT",
    "move_right": "MOVE_RIGHT",
    "turn_left": "TURN_LEFT",
    "turn_right": "TURN_RIGHT",
    "attack": "ATTACK",
    "alt_attack": "ALTATTACK",
    "use": "USE",
    "speed": "SPEED",
    "strafe": "STRAFE",
    "jump": "JUMP",
    "crouch": "CROUCH",
    "reload": "RELOAD",
    "zoom": "ZOOM",
    "look_up": "LOOK_UP",
    "look_down": "LOOK_DOWN",
    "turn180": "TURN180",
    "move_up": "MOVE_UP",
    "move_down": "MOVE_DOWN",
    "land": "LAND",
    "next_weapon": "SELECT_NEXT_WEAPON",
    "prev_weapon": "SELECT_PREV_WEAPON",
    **{f"weapon{i}": f"SELECT_WEAPON{i}" for i in range(10)},
    "next_item": "SELECT_NEXT_ITEM",
    "prev_item": "SELECT_PREV_ITEM",
    "use_item": "ACTIVATE_SELECTED_ITEM",
    "drop_item": "DROP_SELECTED_ITEM",
    "drop_weapon": "DROP_SELECTED_WEAPON",
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
    "health": "HEALTH",
    "ammo": "SELECTED_WEAPON_AMMO",
    "armor": "ARMOR",
    "kills": "KILLCOUNT",
    "frags": "FRAGCOUNT",
    "deaths": "DEATHCOUNT",
    "items": "ITEMCOUNT",
    "secrets": "SECRETCOUNT",
    "damage_taken": "DAMAGE_TAKEN",
    "damage_dealt": "DAMAGECOUNT",
    "hits": "HITCOUNT",
    "hits_taken": "HITS_TAKEN",
    "weapon": "SELECTED_WEAPON",
    "dead": "DEAD",
    "attack_ready": "ATTACK_READY",
    "on_ground": "ON_GROUND",
    "pos_x": "POSITION_X",
    "pos_y": "POSITION_Y",
    "pos_z": "POSITION_Z",
    "angle": "ANGLE",
    "pitch": "PITCH",
    "vel_x": "VELOCITY_X",
    "vel_y": "VELOCITY_Y",
    "vel_z": "VELOCITY_Z",
}


@dataclass(frozen=True)
class _Scenario:
    cfg: str
    actions: str
    game_variables: tuple[str, ...]
    measures: tuple[str, ...]
    doom_map: str | None = None
    game_args: str = ""
    timeout: int | None = None  # tics; None = the .cfg's
    bots: bool = False  # deathmatch against the engine's bots (respawn on death)
    t_maze: bool = False  # drl's memory task (envs/doom/t_maze.py): the scenario name is its variant


_DM_ARGS = (
    "-host 1 -deathmatch +sv_forcerespawn 1 +sv_noautoaim 1 +sv_respawnprotect 1 +sv_spawnfarthest 1 "
    "+sv_nocrouch 1 +cl_run 1 +viz_nocheat 1"
)

#: the scenarios and their defaults (action set, game variables, reported measures)
SCENARIOS: dict[str, _Scenario] = {
    "basic": _Scenario("basic.cfg", "move_left;move_right;attack", ("ammo",), ("kills", "success")),
    "defend_the_center": _Scenario(
        "defend_the_center.cfg", "turn_left;turn_right;attack", ("ammo", "health"), ("kills", "survival_tics")
    ),
    "defend_the_line": _Scenario(
        "defend_the_line.cfg", "turn_left;turn_right;attack", ("ammo", "health"), ("kills", "survival_tics")
    ),
    "health_gathering": _Scenario(
        "health_gathering.cfg",
        "turn_left;turn_right;move_forward;turn_lr+move_forward",
        ("health",),
        ("survival_tics",),
    ),
    "health_gathering_supreme": _Scenario(
        "health_gathering_supreme.cfg",
        "turn_left;turn_right;move_forward;turn_lr+move_forward",
        ("health",),
        ("survival_tics",),
    ),
    "my_way_home": _Scenario(
        "my_way_home.cfg", "turn_left;turn_right;move_forward;turn_lr+move_forward", (), ("success",)
    ),
    "deadly_corridor": _Scenario(
        "deadly_corridor.cfg",
        "move_left;move_right;attack;move_forward;move_backward;turn_left;turn_right",
        ("health", "ammo"),
        ("kills", "success"),
    ),
    # drl's memory task: a cue room, then a T-maze; strafing only, so the player always faces north
    "t_maze": _Scenario("", "move_forward;move_left;move_right", (), ("success",), timeout=1050, t_maze=True),
    "t_maze_long": _Scenario("", "move_forward;move_left;move_right", (), ("success",), timeout=2100, t_maze=True),
    # ViZDoom's own deathmatch.wad (a monster arena) has no deathmatch starts and crashes the engine under
    # -deathmatch, so the bot deathmatch plays cig.wad map01 (the ViZDoom competition map), 2 minutes.
    "deathmatch": _Scenario(
        "cig.cfg",
        "attack;move_fb;move_lr;turn_lr;move_forward+turn_lr;turn_lr+attack;move_forward+attack",
        ("health", "armor", "ammo"),
        ("frags", "deaths", "minutes"),
        doom_map="map01",
        game_args=_DM_ARGS,
        timeout=4200,
        bots=True,
    ),
}


def _one_line_list(names) -> str:
    return ", ".join(names)


def _button_alternatives(part: str, action: str) -> tuple[str, ...]:
    """One ``+`` / ``*`` operand -> the button aliases it stands for (a shorthand expands to its alternatives)."""
    part = part.strip().lower()
    if part in BUTTON_SHORTHANDS:
        return BUTTON_SHORTHANDS[part]
    if part in _ALL_BUTTON_NAMES:
        return (part,)
    close = difflib.get_close_matches(part, list(_ALL_BUTTON_NAMES) + list(BUTTON_SHORTHANDS), n=1)
    raise ValueError(
        f"unknown Doom button '{part}' in action '{action}'"
        + (f" (did you mean {close[0]}?)" if close else "")
        + f"; valid: {_one_line_list(list(BUTTON_ALIASES) + list(BUTTON_SHORTHANDS))} "
        "(or any binary vizdoom Button name in lower case)"
    )


def parse_actions(spec: str) -> list[tuple[str, tuple[str, ...]]]:
    """``"turn_lr+attack;move_forward"`` -> ``[("turn_left+attack", (aliases...)), ...]``.

    ``;`` separates actions, ``+`` joins buttons pressed together; shorthands (``turn_lr``, ``move_fb``,
    ``move_lr``, ``look_ud``) expand combinatorially. ``*`` joins *optional* groups, Arnold's combined actions:
    each group is pressed in one of its ways or not at all, every combination but "nothing" is an action, so
    ``move_fb*move_lr*turn_lr*attack`` gives 3·3·3·2 − 1 = 53 actions (move, strafe, turn and fire at once).
    Returns (name, button aliases) per action.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"Doom action set must be a non-empty string like 'turn_left;turn_right;attack', got {spec!r}")
    out: list[tuple[str, tuple[str, ...]]] = []
    seen: set[frozenset] = set()
    for action in spec.split(";"):
        action = action.strip()
        if not action:
            raise ValueError(f"empty action in Doom action set {spec!r} (';;' or a trailing ';')")
        if "*" in action and "+" in action:
            raise ValueError(
                f"Doom action '{action}' mixes '+' and '*'; use one: '+' presses buttons together, "
                "'*' combines optional groups"
            )
        optional = "*" in action
        groups: list[tuple[str | None, ...]] = [
            _button_alternatives(part, action) for part in action.split("*" if optional else "+")
        ]
        if optional:
            groups = [(None, *g) for g in groups]
        for combo in itertools.product(*groups):
            pressed = tuple(c for c in combo if c is not None)
            if not pressed:
                continue  # "press nothing" is not one of the combined actions (Arnold's count leaves it out)
            key = frozenset(_ALL_BUTTON_NAMES[c] for c in pressed) - {None}
            if key in seen:
                raise ValueError(f"Doom action set {spec!r} lists the button combination '{'+'.join(pressed)}' twice")
            seen.add(key)
            out.append(("+".join(pressed), pressed))
    return out


@dataclass(frozen=True)
class ActionSet:
    names: list[str]  # one per action, e.g. "turn_left+attack"
    buttons: list[str]  # vizdoom Button names, in the order the game is told
    vectors: list[list[int]]  # per action, one plain Python int (0/1) per button

    @staticmethod
    def from_spec(spec: str) -> ActionSet:
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


def game_variable_name(name: str) -> str:
    """A game-variable alias or lower-case name -> its vizdoom GameVariable name (``ValueError`` if unknown)."""
    key = name.strip().lower()
    if key in GAME_VARIABLE_ALIASES:
        return GAME_VARIABLE_ALIASES[key]
    import vizdoom as vzd

    upper = key.upper()
    if upper.isidentifier() and isinstance(getattr(vzd.GameVariable, upper, None), vzd.GameVariable):
        return upper
    raise ValueError(
        f"unknown Doom game variable '{name}'; valid: {_one_line_list(GAME_VARIABLE_ALIASES)} "
        f"(or any vizdoom GameVariable name in lower case)"
    )


# --------------------------------------------------------------------------------------------------- settings


@dataclass
class DoomShaping:
    """Reward-shaping weights added to the native reward for learning (all 0 = native reward only).

    Each weight multiplies a per-step change: ``kill`` per KILLCOUNT increase, ``frag`` per FRAGCOUNT change,
    ``pickup`` per ITEMCOUNT increase (single player only: ViZDoom does not count pickups in multiplayer, issue
    #375), ``health_gain`` per health point gained (not on respawn),
    ``damage_taken`` per point of damage taken (use a negative weight to penalise), ``death`` once per death
    (negative to penalise), ``living`` every agent step; ``injured`` once per agent step in which health fell and
    ``ammo_used`` once per agent step in which the total ammo fell (Arnold's event-based terms; not on a respawn).
    Arnold's pickup terms, read from game-variable changes (they work in deathmatch, where ITEMCOUNT does not):
    ``medikit`` once per step in which health rose, ``armor`` once per step in which armor rose, ``weapon`` per
    weapon newly owned (WEAPON1-7), ``ammo`` per ammo type (AMMO2 bullets, AMMO3 shells, AMMO5 rockets, AMMO6
    cells) that rose; none on the step of a respawn, whose reset inventory is not a pickup.
    """

    kill: float = 0.0
    frag: float = 0.0
    pickup: float = 0.0
    health_gain: float = 0.0
    damage_taken: float = 0.0
    death: float = 0.0
    living: float = 0.0
    injured: float = 0.0
    ammo_used: float = 0.0
    medikit: float = 0.0
    armor: float = 0.0
    weapon: float = 0.0
    ammo: float = 0.0

    def active(self) -> bool:
        return any(v != 0.0 for v in dataclasses.asdict(self).values())


@dataclass
class DoomSettings:
    """A scenario and how it is played; validated on construction (``ValueError``, one line)."""

    scenario: str = "health_gathering"  # one of SCENARIOS
    resolution: str = "RES_160X120"  # render size (vizdoom ScreenResolution name)
    obs_height: int = 60  # after area resize
    obs_width: int = 80
    gray: bool = True  # GRAY8 (1 channel) or RGB24 (3 channels)
    frame_skip: int = 4  # tics per agent step (the action is repeated)
    frame_stack: int = 1  # frames per observation (1 for recurrent agents, 4 for DQN)
    buttons: str | None = None  # action set, e.g. "turn_lr+attack;move_forward"; None = scenario's
    game_variables: list[str] | str | None = None  # e.g. ["health", "ammo"]; None = scenario's; [] = none
    # Multiplies the game variables before the agent sees them. Raw values (health 100, ammo 50) fed the LSTM's
    # gates ~35x more than the image did and saturated them: DRQN never learned basic with scale 1.
    game_variable_scale: float = 0.01
    shaping: DoomShaping | dict = field(default_factory=DoomShaping)
    timeout: int | None = None  # episode time limit in tics; None = scenario's
    num_bots: int = 7  # deathmatch only: bots added after each new episode
    doom_skill: int | None = None  # 1-5; None = scenario's
    max_tics: int | None = None  # a cap on the time limit (eval.max_frames); None = no cap
    game_features: tuple[str, ...] = ()  # per-frame label bits (envs/doom/labels.py), training targets only
    crosshair: bool = False  # draw the crosshair (Arnold's deathmatch agents see it)
    # Deathmatch: a death starts a new life for the learner (VecStep.reset on the death step: the LSTM state and
    # the frame stack start from zeros, as Arnold resets his LSTM on respawn); the game runs on to its time limit.
    reset_on_respawn: bool = False

    def __post_init__(self):
        self.scenario = str(self.scenario).strip().lower()
        if self.scenario not in SCENARIOS:
            close = difflib.get_close_matches(self.scenario, list(SCENARIOS), n=1)
            raise ValueError(
                f"unknown Doom scenario '{self.scenario}'"
                + (f" (did you mean {close[0]}?)" if close else "")
                + f"; valid: {_one_line_list(SCENARIOS)}"
            )
        import vizdoom as vzd

        self.resolution = str(self.resolution).strip().upper()
        if not (re.fullmatch(r"RES_\d+X\d+", self.resolution) and hasattr(vzd.ScreenResolution, self.resolution)):
            valid = [r for r in dir(vzd.ScreenResolution) if r.startswith("RES_")]
            raise ValueError(f"unknown Doom resolution '{self.resolution}'; valid: {_one_line_list(valid)}")
        if not float(self.game_variable_scale) > 0:
            raise ValueError(f"Doom game_variable_scale must be > 0, got {self.game_variable_scale}")
        self.game_variable_scale = float(self.game_variable_scale)
        for name in ("obs_height", "obs_width", "frame_skip", "frame_stack"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"Doom {name} must be >= 1, got {getattr(self, name)}")
            setattr(self, name, int(getattr(self, name)))
        if isinstance(self.shaping, dict):
            unknown = set(self.shaping) - {f.name for f in dataclasses.fields(DoomShaping)}
            if unknown:
                raise ValueError(
                    f"unknown Doom shaping term(s) {sorted(unknown)}; valid: "
                    f"{_one_line_list(f.name for f in dataclasses.fields(DoomShaping))}"
                )
            self.shaping = DoomShaping(**{k: float(v) for k, v in self.shaping.items()})
        if isinstance(self.game_variables, str):
            self.game_variables = [v for v in re.split(r"[,;+\s]+", self.game_variables) if v]
        if self.game_variables is not None:
            self.game_variables = [str(v).strip().lower() for v in self.game_variables]
            for v in self.game_variables:
                game_variable_name(v)
        if self.num_bots < 0:
            raise ValueError(f"Doom num_bots must be >= 0, got {self.num_bots}")
        if self.timeout is not None and int(self.timeout) < 1:
            raise ValueError(f"Doom timeout must be >= 1 tic or None, got {self.timeout}")
        if self.doom_skill is not None and not 1 <= int(self.doom_skill) <= 5:
            raise ValueError(f"Doom doom_skill must be 1-5 or None, got {self.doom_skill}")
        self.action_set()  # validates the buttons
        self.game_features = tuple(check_features(self.game_features))

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


def settings_from_dict(d: dict) -> DoomSettings:
    """``DoomSettings(**d)``, with unknown keys named in the error."""
    names = {f.name for f in dataclasses.fields(DoomSettings)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown Doom setting(s) {sorted(unknown)}; valid: {_one_line_list(sorted(names))}")
    return DoomSettings(**d)


def settings_from_config(cfg) -> DoomSettings:
    """From a config's ``env`` section: ``cfg.doom`` holds DoomSettings fields (and ``games_per_worker``, which is
    not a setting of the game and is left out); frame_skip and frame_stack are the section's own unless
    ``cfg.doom`` sets them. Errors are ``ConfigError`` naming ``env.doom``."""
    from drl.config import ConfigError

    fields = {"frame_skip": cfg.frame_skip, "frame_stack": cfg.frame_stack, **dict(cfg.doom)}
    fields.pop("games_per_worker", None)
    try:
        return settings_from_dict(fields)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"env.doom: {e}") from None
