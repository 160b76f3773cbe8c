"""Registries: environment kinds, agents and encoders by name. The built-ins are registered here too (at the end).

An entry is the object itself or a lazy ``"module:attribute"`` string, imported on first use, so naming and
validating a config never imports torch, ale-py or vizdoom. A user's module registers its own entries and is loaded
by ``imports: [mypkg.mymodule]`` in a YAML or ``--import mypkg.mymodule`` on the CLI::

    import drl

    @drl.register_encoder("tiny")
    def tiny(obs_shape, cfg):       # -> nn.Module mapping obs [B, *obs_shape] to features [B, F]
        ...
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from drl.errors import UserError


class Registry:
    """Name -> object (or ``"module:attribute"``, resolved on ``get``)."""

    def __init__(self, what: str, config_key: str):
        self.what, self.config_key = what, config_key  # e.g. "encoder", "network.encoder"
        self._entries: dict[str, Any] = {}

    def register(self, name: str, obj: Any = None, *, replace: bool = False):
        """``register(name, obj)``, or ``@register(name)`` as a decorator. Re-registering a name needs
        ``replace=True`` (a second module claiming a built-in name is almost always a mistake)."""
        if not isinstance(name, str) or not name:
            raise UserError(f"a {self.what} name must be a non-empty string, got {name!r}")

        def add(value):
            if name in self._entries and not replace and self._entries[name] is not value:
                raise UserError(f"{self.what} '{name}' is already registered; pick another name or pass replace=True")
            self._entries[name] = value
            return value

        return add if obj is None else add(obj)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def check(self, name: str) -> None:
        """A one-line ``UserError`` naming the closest registered names when ``name`` is unknown."""
        if name not in self._entries:
            close = difflib.get_close_matches(str(name), self.names(), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise UserError(
                f"unknown {self.what} '{name}' ({self.config_key}); {hint}registered: "
                f"{', '.join(self.names())} (a module of yours can add one: see `imports`)"
            )

    def get(self, name: str) -> Any:
        self.check(name)
        entry = self._entries[name] = resolve(self._entries[name])
        return entry


def resolve(ref: Any) -> Any:
    """``"module:attribute"`` -> that attribute (imported now); anything else as it is."""
    if isinstance(ref, str):
        module, _, attribute = ref.partition(":")
        return getattr(importlib.import_module(module), attribute)
    return ref


@dataclass
class EnvKind:
    """An environment kind: its config section (a pydantic model with ``kind: Literal[name]``) and a factory
    ``make(cfg, *, num_envs, device, seed, evaluation, max_frames) -> VectorEnv`` (``drl.vec_env`` contract);
    ``max_frames`` is the episode limit in emulator frames for evaluation (None: the section's own). A kind that
    labels game features (``VecStep.labels``) gives ``check_features(names) -> names``, which refuses an
    ``agent.aux.features`` name it cannot label with a one-line ``ValueError``; None for kinds without labels.
    Each member may be a lazy ``"module:attribute"``."""

    config: Any
    make: Callable | str
    check_features: Callable | str | None = None


ENV_KINDS = Registry("environment kind", "env.kind")
AGENTS = Registry("agent", "agent.algo")
ENCODERS = Registry("encoder", "network.encoder")


def register_env(
    kind: str, config, make: Callable | str, *, check_features: Callable | str | None = None, replace: bool = False
) -> None:
    """Add an environment kind: ``config`` is its section's pydantic model (subclass ``drl.config.EnvSection``
    with ``kind: Literal["<kind>"]``), ``make`` builds the vector env from it, ``check_features`` checks the
    game-feature names it can label (see ``EnvKind``)."""
    ENV_KINDS.register(kind, EnvKind(config, make, check_features), replace=replace)


def register_agent(name: str, cls: Any = None, *, replace: bool = False):
    """Add an agent (a class implementing ``drl.agent.Agent``, built as ``cls(cfg, spec, device, bf16,
    generator)``). Usable as a decorator."""
    return AGENTS.register(name, cls, replace=replace)


def register_encoder(name: str, fn: Any = None, *, replace: bool = False):
    """Add an encoder ``fn(obs_shape, cfg) -> nn.Module`` mapping obs ``[B, *obs_shape]`` (uint8 images already
    scaled to [0, 1] floats, vectors as float32) to flat features ``[B, F]``. ``drl.networks.QNetwork`` calls it
    with ``obs_shape``, the env's observation shape as a tuple (``(C, H, W)`` with the frame stack in ``C`` for
    images, ``(D,)`` for vectors), and ``cfg``, the run's ``network`` section (``drl.config.NetworkConfig``:
    ``mlp_layers``, ``batch_norm``, ...), then runs it once on a zero batch to size the layers above it. Usable as
    a decorator."""
    return ENCODERS.register(name, fn, replace=replace)


def import_modules(modules: list[str]) -> None:
    """Import the user modules named by ``imports`` / ``--import`` (they register their envs, agents, encoders)."""
    from drl.errors import first_line

    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            raise UserError(
                f"cannot import '{name}' (imports / --import): {exc}; check the module name and that "
                "its folder is on PYTHONPATH (or installed)"
            ) from None
        except UserError:
            raise
        except Exception as exc:  # a bug in the user's module: one line here, the traceback with --debug
            raise UserError(
                f"importing '{name}' (imports / --import) failed: {type(exc).__name__}: "
                f"{first_line(exc)}; fix the module (--debug shows the traceback)"
            ) from exc


# The built-ins: the one place that names them, as lazy strings (registering imports nothing). Each env kind's
# config section sits in a light module of its own beside its factory's, so validating a config imports no torch.
register_env("atari", "drl.envs.atari_config:AtariEnvConfig", "drl.envs.atari:make_atari_env")
register_env(
    "doom",
    "drl.envs.doom.config:DoomEnvConfig",
    "drl.envs.doom:make_doom_env",
    check_features="drl.envs.doom.labels:check_features",
)
register_env("gym", "drl.envs.gym_config:GymEnvConfig", "drl.envs.gym:make_gym_env")
register_env("catch", "drl.envs.torch_native_config:CatchEnvConfig", "drl.envs.torch_native:make_catch_env")
register_env("memory", "drl.envs.torch_native_config:MemoryEnvConfig", "drl.envs.torch_native:make_memory_env")
register_agent("dqn", "drl.agents.dqn:DQN")
register_agent("drqn", "drl.agents.drqn:DRQN")
ENCODERS.register("nature", "drl.networks:nature_encoder")
ENCODERS.register("nips", "drl.networks:nips_encoder")
ENCODERS.register("doom", "drl.networks:doom_encoder")
ENCODERS.register("small", "drl.networks:small_encoder")
ENCODERS.register("mlp", "drl.networks:mlp_encoder")
