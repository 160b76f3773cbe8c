"""Typed experiment configs: one YAML per experiment under ``experiments/``, plus dotted ``key=value`` overrides.

Validation is done by pydantic; every problem is turned into a ``ConfigError`` whose message is one readable line
that names the key and the fix. The CLIs print it and exit with code 2.
"""

from __future__ import annotations

import difflib
import importlib.resources
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from drl import registry
from drl.errors import UserError

# the named experiments: the repository's experiments/ folder, installed as the package data of drl.experiments
EXPERIMENTS_DIR = Path(str(importlib.resources.files("drl.experiments")))


class ConfigError(UserError):
    """A user-facing configuration problem (printed as one line, exit code 2)."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EnvSection(Section):
    """Fields every environment kind has. Each kind subclasses this with ``kind: Literal["<kind>"]`` and its own
    fields (see ``drl.registry.register_env``); ``env:`` is validated against the class of its ``kind``, so a key of
    another kind (``env.game`` in a Doom run) is an error rather than ignored."""

    kind: str
    num_envs: int = Field(4, ge=1, le=4096)  # envs stepping together (one vector step = num_envs agent steps)
    reward_scale: float = Field(1.0, gt=0.0)  # learning rewards only (after clipping/shaping)

    def stepping(self) -> Literal["caller", "threads", "processes"]:
        """Where a vector step runs between ``step_async`` and ``step_wait``: in the caller's thread (all in
        ``step_wait``; the default), in threads of this process (ALE) or in worker processes (Doom). What
        ``compute.overlap_env: auto`` decides from (``drl.runtime.use_overlap_env``)."""
        return "caller"


class NetworkConfig(Section):
    encoder: str = "nature"  # a registered encoder: nature, nips, doom, small (images), mlp (vectors)
    hidden: int = Field(512, ge=1)  # units of the Q head's hidden layer
    dueling: bool = False  # Q = V + A - mean(A)
    lstm_size: int = Field(512, ge=1)  # recurrent agents: LSTM units
    mlp_layers: list[int] = Field(default_factory=lambda: [256, 256])  # mlp encoder: units of each hidden layer
    dropout: float = Field(0.0, ge=0.0, lt=1.0)  # Arnold: on the encoder output (+ extras) and in the aux head
    batch_norm: bool = False  # BatchNorm2d after each conv of the encoder (before its ReLU)


class AuxConfig(Section):
    """``agent.aux``: the game-feature head (Lample & Chaplot 2017) beside the Q head, trained with a binary
    cross-entropy on per-frame labels the env computes (Doom; never an input of the agent)."""

    features: list[str] = Field(default_factory=list)  # e.g. [enemy]; names: the env kind's (doom: envs/doom/labels.py)
    weight: float = Field(1.0, ge=0.0)  # loss = Q loss + weight * BCE (Arnold: 1)

    @field_validator("features", mode="before")
    @classmethod
    def _feature_names(cls, value):  # the env kind checks them (Config._features_the_env_labels)
        if isinstance(value, str):  # "enemy,health" on the command line
            value = [v for v in value.replace(";", ",").replace("+", ",").split(",") if v.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return [v.strip().lower() for v in value]
        return value


class AgentConfig(Section):
    algo: str = "dqn"  # a registered agent: dqn, drqn (CNN -> LSTM -> head, sequences)
    lr: float = Field(1e-4, gt=0.0, le=1.0)
    adam_eps: float = Field(1.5e-4, gt=0.0)
    gamma: float = Field(0.99, gt=0.0, le=1.0)
    n_step: int = Field(3, ge=1, le=100)
    double: bool = True
    batch_size: int = Field(32, ge=1)
    train_freq: int = Field(4, ge=1)  # agent steps (summed over envs) per gradient step
    learning_starts: int = Field(10_000, ge=0)  # agent steps before the first update
    target_update_interval: int = Field(2_000, ge=1)  # agent steps between hard target copies
    max_grad_norm: float = Field(10.0, gt=0.0)
    huber_delta: float = Field(1.0, gt=0.0)
    eps_start: float = Field(1.0, ge=0.0, le=1.0)
    eps_end: float = Field(0.01, ge=0.0, le=1.0)
    eps_decay_steps: int = Field(150_000, ge=1)  # agent steps of the linear epsilon schedule
    aux: AuxConfig = Field(default_factory=AuxConfig)  # game-feature head (off by default)


class ReplayConfig(Section):
    capacity: int = Field(100_000, ge=1)  # transitions (all envs together)
    prioritized: bool = False
    alpha: float = Field(0.6, ge=0.0, le=1.0)
    beta_start: float = Field(0.4, ge=0.0, le=1.0)  # annealed linearly to 1 over total_steps
    priority_eps: float = Field(1e-6, gt=0.0)
    save_in_checkpoint: bool = False
    frames_on_device: bool = False  # frames in the training device's memory (CUDA: GPU gathers)
    # sequences for recurrent agents (R2D2 used 80 / 40 / 40); sequence_length includes the burn-in
    sequence_length: int = Field(20, ge=2)
    burn_in: int = Field(8, ge=0)
    sequence_overlap: int = Field(10, ge=0)
    priority_eta: float = Field(0.9, ge=0.0, le=1.0)  # eta * max|td| + (1 - eta) * mean|td|


class EvalConfig(Section):
    interval: int = Field(50_000, ge=1)  # agent steps between evaluations
    episodes: int = Field(8, ge=1)
    num_envs: int = Field(8, ge=1)
    epsilon: float = Field(0.001, ge=0.0, le=1.0)
    max_frames: int = Field(108_000, ge=1)
    stop_at: float | None = None  # end the run at the first evaluation whose mean reaches this


class ComputeConfig(Section):
    bf16: Literal["auto", "on", "off"] = "auto"  # autocast; auto = on for CPUs with AMX/AVX512-BF16, CUDA
    channels_last: Literal["auto", "on", "off"] = "auto"  # oneDNN NHWC; auto = on for fp32 on CPU (bench: 1.2x)
    act_bf16: Literal["auto", "on", "off"] = "auto"  # acting under bf16 too; auto = on CUDA only (CPU: fp32 faster)
    compile: bool = False  # torch.compile the feed-forward Q-networks (first steps slow)
    threads: int = Field(0, ge=0)  # torch intra-op threads, 0 = number of cores
    overlap_env: Literal["auto", "on", "off"] = "auto"  # updates while the env steps (speed only); auto: see runtime
    keep_freed_memory: Literal["auto", "on", "off"] = "auto"  # freed tensors' memory stays in the heap; auto: glibc

    @field_validator("bf16", "channels_last", "act_bf16", "overlap_env", "keep_freed_memory", mode="before")
    @classmethod
    def _yaml_booleans(cls, value):  # YAML reads on/off as booleans
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


class TrackingConfig(Section):
    wandb: Literal["auto", "online", "offline", "off"] = "auto"  # auto = online if logged in and reachable
    project: str = "drl"
    entity: str | None = None
    tensorboard: bool = False  # also write TensorBoard event files to RUN_DIR/tensorboard/

    @field_validator("wandb", mode="before")
    @classmethod
    def _yaml_off(cls, value):  # YAML reads off as a boolean
        return "off" if value is False else value


class DistributedConfig(Section):
    """Ape-X / R2D2 on Ray (``drl/distributed``, ``docs/distributed.md``): collector actors step the envs, one
    learner trains. ``collectors: 0`` is the single-process loop (``drl/loop.py``), untouched."""

    collectors: int = Field(0, ge=0, le=4096)  # Ray actors stepping envs; 0 = single-process training
    address: str | None = None  # join a running cluster ("auto", "host:port"); None: local one
    envs_per_collector: int | None = Field(None, ge=1, le=4096)  # None: env.num_envs
    chunk_steps: int = Field(256, ge=1)  # agent steps per chunk a collector sends (over its envs)
    inflight: int = Field(2, ge=1, le=16)  # chunk tasks queued per collector (2: no idle round trip)
    weights_interval: int = Field(25, ge=1)  # learner updates between weight publications (ray.put)
    eps_base: float = Field(0.4, ge=0.0, le=1.0)  # Ape-X: collector i acts with eps_base ** (1 + eps_alpha
    eps_alpha: float = Field(7.0, ge=0.0)  #   * i / (N - 1)); N = 1: eps_base
    pace: Literal["ratio", "free"] = "ratio"  # ratio: an update per agent.train_freq steps in; free: Ape-X
    replay: Literal["learner", "actor"] = "learner"  # where the replay lives: the learner process, or its own actor
    prioritized: bool = True  # prioritized replay, initial priorities from the collectors
    max_restarts: int = Field(20, ge=-1)  # Ray restarts of a dead collector (-1: unlimited)
    collector_cpus: float = Field(1.0, gt=0.0)  # Ray CPU resource per collector
    collector_threads: int = Field(1, ge=1)  # torch threads in each collector
    collector_nice: int = Field(0, ge=0, le=19)  # niceness of collectors (a shared host keeps the learner fast)
    num_cpus: int | None = Field(None, ge=1)  # local cluster's logical CPUs; None: enough for all collectors


class InitFromConfig(Section):
    """``init_from``: the run whose weights this run started from (``drl.train --init-from RUN_DIR``, see
    ``drl/segments.py``). A record written by ``--init-from``, not an input: its env-step counter starts at 0."""

    run_dir: str  # the parent run directory, as given to --init-from
    source: Literal["checkpoint", "weights"]  # checkpoints/latest.pt (exact) or weights.safetensors (bf16)
    env_steps: int = Field(ge=0)  # the parent's own env steps when those weights were saved
    chain_env_steps: int = Field(ge=0)  # env steps of the whole chain up to those weights (this run's
    #   rows add theirs: chain_env_steps in metrics.jsonl)
    optimizer: bool = False  # Adam's state came too (--init-optimizer)


class Config(Section):
    name: str = "experiment"
    imports: list[str] = Field(default_factory=list)  # modules imported first: they register envs, agents, encoders
    seed: int = Field(0, ge=0)
    total_steps: int = Field(2_000_000, ge=1)  # agent steps (env steps summed over envs)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    output_dir: str = "runs"
    log_interval: int = Field(5_000, ge=1)  # agent steps between train metric rows
    checkpoint_interval: int = Field(100_000, ge=1)  # agent steps between checkpoints
    # env.kind's class; each kind's class gives ``kind`` a default, which mypy cannot see through type[EnvSection]
    env: SerializeAsAny[EnvSection] = Field(default_factory=lambda: env_config_class(DEFAULT_ENV_KIND)())  # type: ignore[call-arg]
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    replay: ReplayConfig = Field(default_factory=ReplayConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    init_from: InitFromConfig | None = None  # the parent of a segment (written by drl.train --init-from)

    @property
    def chain_offset(self) -> int:
        """Env steps of the chain before this run: its parent's ``chain_env_steps`` (0 for a run that is no
        segment); this run's step ``n`` is the chain's ``chain_offset + n``."""
        return self.init_from.chain_env_steps if self.init_from is not None else 0

    @field_validator("env", mode="before")
    @classmethod
    def _env_of_its_kind(cls, value):  # a dict is validated by the section class registered for its kind
        if isinstance(value, dict):
            return env_config_class(value.get("kind", DEFAULT_ENV_KIND)).model_validate(
                {**value, "kind": value.get("kind", DEFAULT_ENV_KIND)}
            )
        return value

    @model_validator(mode="after")
    def _features_the_env_labels(self) -> Config:
        check = registry.ENV_KINDS.get(self.env.kind).check_features
        if self.agent.aux.features and check is not None:  # a kind without labels refuses them in make_env
            try:
                registry.resolve(check)(self.agent.aux.features)
            except ValueError as exc:
                raise ConfigError(f"agent.aux.features: {exc}") from None
        return self

    @model_validator(mode="after")
    def _registered_names(self) -> Config:
        registry.AGENTS.check(self.agent.algo)
        registry.ENCODERS.check(self.network.encoder)
        return self

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        if self.agent.batch_size > self.replay.capacity:
            raise ValueError(
                f"agent.batch_size ({self.agent.batch_size}) is larger than replay.capacity "
                f"({self.replay.capacity}); lower agent.batch_size or raise replay.capacity"
            )
        if self.replay.burn_in >= self.replay.sequence_length:
            raise ValueError(
                f"replay.sequence_length ({self.replay.sequence_length}) must be above replay.burn_in "
                f"({self.replay.burn_in}); raise sequence_length or lower burn_in"
            )
        if self.replay.sequence_overlap >= self.replay.sequence_length:
            raise ValueError("replay.sequence_overlap must be below replay.sequence_length")
        if self.init_from is not None and self.init_from.chain_env_steps < self.init_from.env_steps:
            raise ValueError("init_from.chain_env_steps must be at least init_from.env_steps")
        if self.agent.eps_end > self.agent.eps_start:
            raise ValueError("agent.eps_end must not exceed agent.eps_start")
        if self.replay.frames_on_device and self.distributed.collectors and self.distributed.replay == "actor":
            raise ValueError(
                "replay.frames_on_device keeps the frames on the learner's device but "
                "distributed.replay=actor puts the replay in its own actor; use one or the other"
            )
        return self


# ---------------------------------------------------------------------------------------------------------------
def available_experiments() -> list[str]:
    """Named experiments; files starting with "_" are shared bases that others ``inherit`` from."""
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml") if not p.stem.startswith("_"))


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_experiment_data(path: Path) -> dict:
    """Read an experiment YAML; ``inherit: NAME`` deep-merges it over experiments/NAME.yaml."""
    data = load_yaml(path)
    if not data:
        raise ConfigError(f"experiment file {path} is empty; give at least env.kind (see experiments/*.yaml)")
    parent = data.pop("inherit", None)
    if parent is not None:
        parent_path = EXPERIMENTS_DIR / f"{parent}.yaml"
        if not parent_path.exists():
            raise ConfigError(f"{path} inherits from '{parent}', but {parent_path} does not exist")
        base = load_experiment_data(parent_path)
        base.pop("name", None)  # a base never names the experiment
        data = _merge(base, data)
    return data


DEFAULT_ENV_KIND = "atari"


def env_config_class(kind: str) -> type[EnvSection]:
    """The section class registered for env kind ``kind`` (imported on first use)."""
    entry = registry.ENV_KINDS.get(kind)
    entry.config = registry.resolve(entry.config)  # built-ins register it lazily as "module:Class"
    return entry.config


def _section_model(model: type[BaseModel], name: str, value) -> type[BaseModel] | None:
    """The pydantic class of sub-section ``name`` (the kind's own class for ``env``), or None for a plain field."""
    if model is Config and name == "env":
        kind = value.get("kind", DEFAULT_ENV_KIND) if isinstance(value, dict) else DEFAULT_ENV_KIND
        return env_config_class(kind)
    ann = model.model_fields[name].annotation
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def _schema_keys(model: type[BaseModel], data: dict, prefix: str = "") -> list[str]:
    keys = []
    for name in model.model_fields:
        sub = _section_model(model, name, data.get(name))
        if sub is not None:
            value = data.get(name)
            keys += _schema_keys(sub, value if isinstance(value, dict) else {}, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def _check_keys(data: dict, model: type[BaseModel] = Config, prefix: str = "", root: dict | None = None) -> None:
    root = data if root is None else root
    for key, value in data.items():
        if key not in model.model_fields:
            dotted = prefix + key
            close = difflib.get_close_matches(dotted, _schema_keys(Config, root), n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}?" if close else "see the experiment YAML files for valid keys"
            of_kind = f" for env.kind '{model.model_fields['kind'].default}'" if issubclass(model, EnvSection) else ""
            raise ConfigError(f"unknown config key '{dotted}'{of_kind}: {hint}")
        sub = _section_model(model, key, value)
        if sub is not None:
            if not isinstance(value, dict):
                raise ConfigError(
                    f"config key '{prefix}{key}' is a section; set its fields, e.g. {prefix}{key}.<field>=..."
                )
            _check_keys(value, sub, f"{prefix}{key}.", root)


def _describe(error: ErrorDetails) -> str:
    key = ".".join(str(p) for p in error["loc"])
    ctx = error.get("ctx") or {}
    kind = error["type"]
    got = error.get("input")
    bounds = {
        "greater_than": "> {gt}",
        "greater_than_equal": ">= {ge}",
        "less_than": "< {lt}",
        "less_than_equal": "<= {le}",
    }
    if kind in bounds:
        return f"{key} must be {bounds[kind].format(**ctx)} (got {got!r}); set {key} within range"
    if kind == "missing":
        return f"{key} is required"
    if kind == "literal_error":
        return f"{key} must be one of {ctx.get('expected')} (got {got!r})"
    if kind == "value_error" and not key:
        return str(ctx.get("error", error["msg"]))
    expected = kind.split("_")[0]
    return f"{key} has the wrong type: expected {expected}, got {got!r}"


def validate(data: dict) -> Config:
    """A config from plain data (a YAML's mapping with overrides applied); its ``imports`` are imported first."""
    imports = data.get("imports") or []
    if not isinstance(imports, list) or not all(isinstance(m, str) for m in imports):
        raise ConfigError(f"imports must be a list of module names, e.g. imports: [mypkg.envs] (got {imports!r})")
    registry.import_modules(imports)
    if isinstance(data.get("env"), dict) and not isinstance(data["env"].get("kind", DEFAULT_ENV_KIND), str):
        raise ConfigError(f"env.kind must be a name, got {data['env']['kind']!r}")
    if isinstance(data.get("env"), dict):
        registry.ENV_KINDS.check(data["env"].get("kind", DEFAULT_ENV_KIND))
    _check_keys(data)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("invalid config: " + _describe(exc.errors()[0])) from None


def load_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"malformed YAML in {path}{where}: fix the syntax") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key=value (e.g. agent.lr=1e-4)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string; let numbers be numbers
        try:
            value = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            pass
    return key.strip().split("."), value


def resolve_experiment(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise ConfigError(f"config file '{path}' does not exist")
        return path
    path = EXPERIMENTS_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        close = difflib.get_close_matches(name_or_path, available_experiments(), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"unknown experiment '{name_or_path}'{hint}; available: {', '.join(available_experiments())}")
    return path


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config key '{k}' is not a section; cannot set '{text}'")
        node[keys[-1]] = value
    return data


def load(name_or_path: str, overrides: Sequence[str] = (), imports: Sequence[str] = ()) -> Config:
    """A named experiment or a YAML file, with dotted overrides; ``imports`` are added to the config's own."""
    path = resolve_experiment(name_or_path)
    data = load_experiment_data(path)
    data.setdefault("name", path.stem)
    if imports:
        data["imports"] = [*data.get("imports", []), *(m for m in imports if m not in data.get("imports", []))]
    return validate(apply_overrides(data, list(overrides)))


# keys of the single env section that configs written before env kinds had their own sections carry for every kind
_LEGACY_ENV_KEYS = {
    "game",
    "frame_skip",
    "frame_stack",
    "sticky_actions",
    "noop_max",
    "life_loss_terminal",
    "clip_rewards",
    "max_episode_frames",
    "flicker",
    "num_threads",
    "size",
    "doom",
}


def load_run_config(run_dir: Path, overrides: Sequence[str] = ()) -> Config:
    """The config a run directory was started with (``RUN_DIR/config.yaml``), with overrides. A config written
    before env kinds had sections of their own is read too: the keys that did not apply to its kind are dropped."""
    data = load_yaml(Path(run_dir) / "config.yaml")
    env = data.get("env")
    if isinstance(env, dict) and isinstance(env.get("kind", DEFAULT_ENV_KIND), str):
        registry.import_modules(data.get("imports") or [])
        if env.get("kind", DEFAULT_ENV_KIND) in registry.ENV_KINDS:
            fields = env_config_class(env.get("kind", DEFAULT_ENV_KIND)).model_fields
            data["env"] = {k: v for k, v in env.items() if k in fields or k not in _LEGACY_ENV_KEYS}
    return validate(apply_overrides(data, list(overrides)))


def to_yaml(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(), sort_keys=False)
