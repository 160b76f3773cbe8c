"""drl: value-based deep RL (DQN on pixels, recurrent DRQN, any Gymnasium env), from the CLI or from Python.

The Python API (``drl.load_config``, ``drl.learn``, ``drl.Trainer``, ``drl.load_agent``) and the registries
(``drl.register_env``, ``drl.register_agent``, ``drl.register_encoder``). Names resolve on first use, so
``import drl`` stays light (no torch until it is needed).
"""

from importlib.metadata import PackageNotFoundError, version

from drl.registry import register_agent, register_encoder, register_env

try:
    __version__ = version("drl")  # the one place it is set: pyproject.toml
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_LAZY = {
    "load_config": "drl.api",
    "learn": "drl.api",
    "load_agent": "drl.api",
    "Result": "drl.api",
    "Trainer": "drl.loop",
    "Agent": "drl.agent",
    "EnvSpec": "drl.agent",
    "Config": "drl.config",
    "EnvSection": "drl.config",
    "VecStep": "drl.vec_env",
}

__all__ = ["__version__", "register_agent", "register_encoder", "register_env", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'drl' has no attribute '{name}'")
