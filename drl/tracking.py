"""Weights & Biases tracking that never stops training.

``WandbTracker`` mirrors every ``metrics.jsonl`` row into a W&B run (``MetricsWriter(..., tracker=...)`` forwards
them). Mode ``auto`` goes online only when the user is logged in (``WANDB_API_KEY`` or a netrc entry for the API
host) and the API host accepts a TCP connection within ``CHECK_TIMEOUT`` seconds; otherwise the run is written
offline to ``RUN_DIR/wandb/`` and one line says how to upload it later with ``wandb sync``. A ``WANDB_MODE``
environment variable is respected in auto mode. Any wandb failure (init, log, finish) turns tracking off with a
one-line warning; metrics.jsonl is the source of truth either way.

W&B names (x axis ``env_frames``; ``env_steps`` is logged beside it):
- train rows:   ``train/loss``, ``train/q_mean`` (and the agent's other update stats), ``train/epsilon``,
  ``train/sps``, ``train/episodes``, ``train/updates``, ``train/episode_return`` (mean of the last 20 episodes)
- episode rows: ``train/episode_return``, ``train/episode_length`` and scenario measures (``train/kills``,
  ``train/survival_tics``, ``train/success``, ...)
- eval rows:    ``eval/return_mean``, ``eval/return_std``, ``eval/return_median``, ``eval/return_min``,
  ``eval/return_max``, ``eval/length_mean``, ``eval/<measure>_mean``, ``eval/episodes``, ``eval/seconds``
- ``eval/video`` (``drl.evaluate --video``); summary: last values plus ``final/...`` at the end of the run.

``TensorBoardTracker`` (``tracking.tensorboard: true``) writes the same scalars to TensorBoard event files in
``RUN_DIR/tensorboard/``, with the env steps as the step axis.
"""

from __future__ import annotations

import math
import netrc
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from drl.config import Config
from drl.errors import first_line, require

if TYPE_CHECKING:
    import wandb

DEFAULT_BASE_URL = "https://api.wandb.ai"
CHECK_TIMEOUT = 3.0  # seconds for the "is the server there" probe in auto mode
INIT_TIMEOUT = 30.0  # seconds wandb.init may take before we give up on tracking
FINISH_TIMEOUT = 120.0  # seconds of upload at the end of an online run (the rest stays on disk for wandb sync)
ID_FILE = "wandb_run_id"  # "ID MODE": a resumed online training continues the same W&B run

_ENV_MODES = {
    "online": "online",
    "run": "online",
    "offline": "offline",
    "dryrun": "offline",
    "disabled": "off",
    "off": "off",
}


def _warn(message: str) -> None:
    print(f"drl: wandb: {message}", file=sys.stderr, flush=True)


def api_host() -> tuple[str, int]:
    url = urlparse(os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL)
    return url.hostname or "api.wandb.ai", url.port or (80 if url.scheme == "http" else 443)


def logged_in() -> bool:
    """An API key in the environment, or a netrc entry for the API host (what ``wandb login`` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host, _ = api_host()
    candidates = [os.environ["NETRC"]] if os.environ.get("NETRC") else ["~/.netrc", "~/_netrc"]
    for name in candidates:
        path = Path(name).expanduser()
        if path.is_file():
            try:
                auth = netrc.netrc(path).authenticators(host)
            except (netrc.NetrcParseError, OSError):
                continue
            if auth and auth[2]:
                return True
    return False


def server_reachable(timeout: float = CHECK_TIMEOUT) -> bool:
    """A TCP connect to the API host, bounded by ``timeout`` including name resolution (done in a thread)."""
    host, port = api_host()
    ok = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                ok.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(ok)


def resolve_mode(requested: str) -> tuple[str, str]:
    """(``online`` | ``offline`` | ``off``, reason) for a requested mode."""
    if requested != "auto":
        return requested, f"tracking.wandb={requested}"
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env in _ENV_MODES:
        return _ENV_MODES[env], f"WANDB_MODE={env}"
    if os.environ.get("WANDB_DISABLED", "").strip().lower() in ("1", "true", "yes"):
        return "off", "WANDB_DISABLED"
    if not logged_in():
        return "offline", "not logged in"
    if not server_reachable():
        return "offline", f"{api_host()[0]} not reachable"
    return "online", "logged in"


def _scalar(value):
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and (not isinstance(value, float) or math.isfinite(value)):
        return value
    return None


def wandb_names(row: dict) -> dict:
    """Map one metrics.jsonl row to W&B metric names (scalars only; ``None`` and lists are dropped)."""
    event = row.get("event")
    out = {}
    for key, value in row.items():
        if key in ("event", "env_steps", "frames", "wall_time", "chain_env_steps"):
            continue
        value = _scalar(value)
        if value is None:
            continue
        if event == "train":
            name = (
                "train/episode_return"
                if key == "recent_return"
                else key
                if key.startswith("train/")
                else f"train/{key}"
            )
        elif event == "episode":
            name = {"return": "train/episode_return", "length": "train/episode_length"}.get(key, f"train/{key}")
        elif event == "eval":
            name = "eval/seconds" if key == "eval_seconds" else key if key.startswith("eval/") else f"eval/{key}"
        else:
            name = f"{event}/{key}"
        out[name] = value
    out["env_frames"] = int(row.get("frames", 0))
    out["env_steps"] = int(row.get("env_steps", 0))
    if row.get("chain_env_steps") is not None:  # a segment (drl.train --init-from): steps of the whole chain
        out["chain_env_steps"] = int(row["chain_env_steps"])
    if row.get("wall_time") is not None:
        out["wall_time"] = row["wall_time"]
    return out


class WandbTracker:
    """One W&B run for one training (``job_type="train"``) or evaluation (``"eval"``) of a run directory."""

    def __init__(self, cfg: Config, run_dir: Path, job_type: str = "train", mode: str = "auto"):
        self.run: wandb.Run | None = None
        self.mode = "off"
        self.sync_dir: Path | None = None
        self.last_eval: dict = {}
        self.run_dir = Path(run_dir)
        requested = cfg.tracking.wandb if mode == "auto" else mode
        try:
            self.mode, reason = resolve_mode(requested)
        except Exception as exc:  # noqa: BLE001 - tracking must never stop training
            _warn(f"tracking off ({type(exc).__name__}: {exc})")
            return
        if self.mode == "off":
            return
        try:
            self._init(cfg, job_type)
        except Exception as exc:  # noqa: BLE001
            first = first_line(exc, 160)
            if self.mode == "online":
                _warn(f"online init failed ({first}); writing offline instead")
                self.mode, reason = "offline", "online init failed"
                try:
                    self._init(cfg, job_type)
                except Exception as exc2:  # noqa: BLE001
                    first = first_line(exc2, 160)
                    self.run, self.mode = None, "off"
            else:
                self.run, self.mode = None, "off"
            if self.run is None:
                _warn(f"tracking off: init failed ({first}); metrics.jsonl is still written")
                return
        if self.mode == "offline":
            _warn(f"offline ({reason}); upload later with: wandb sync {self.sync_dir}")
        else:
            url = getattr(self.run, "url", None)
            _warn(f"online, run {url}" if url else "online")

    def _init(self, cfg: Config, job_type: str) -> None:
        os.environ.setdefault("WANDB_SILENT", "true")  # our own one line replaces wandb's banner
        os.environ.setdefault("WANDB_DISABLE_WEAVE", "true")  # it mistakes our `agents` package for an LLM SDK
        import wandb

        run_id = None
        id_file = self.run_dir / ID_FILE
        if job_type == "train" and self.mode == "online" and id_file.exists():
            # A resumed online training continues its online W&B run. Offline sessions get a run of their own in
            # the same group: an offline resume cannot know the server's last step, so `wandb sync` could drop rows.
            previous = id_file.read_text().split()
            run_id = previous[0] if previous[1:] == ["online"] else None
        settings = wandb.Settings(
            init_timeout=INIT_TIMEOUT,
            finish_timeout=FINISH_TIMEOUT,
            silent=True,
            console="off",
            x_disable_stats=True,
            reinit="create_new",
        )
        self.run = wandb.init(
            project=cfg.tracking.project,
            entity=cfg.tracking.entity,
            group=cfg.name,
            job_type=job_type,
            name=f"{cfg.name}-seed{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}",
            config=cfg.model_dump(),
            dir=str(self.run_dir),
            mode="online" if self.mode == "online" else "offline",  # _init's only modes
            id=run_id,
            resume="allow" if run_id else None,
            settings=settings,
        )
        if job_type == "train":
            id_file.write_text(f"{self.run.id} {self.mode}\n")
        self.sync_dir = Path(self.run.dir).parent  # RUN_DIR/wandb/offline-run-DATE-ID
        self.run.define_metric("env_frames")
        self.run.define_metric("env_steps")
        self.run.define_metric("train/*", step_metric="env_frames")
        self.run.define_metric("eval/*", step_metric="env_frames")

    @property
    def enabled(self) -> bool:
        return self.run is not None

    def _failed(self, what: str, exc: Exception) -> None:
        first = first_line(exc, 160)
        _warn(f"tracking off: {what} failed ({first}); metrics.jsonl is still written")
        self.run = None

    def log_row(self, row: dict) -> None:
        if self.run is None:
            return
        try:
            data = wandb_names(row)
            if row.get("event") == "eval":
                self.last_eval = {k: v for k, v in data.items() if k.startswith("eval/")}
            self.run.log(data)
        except Exception as exc:  # noqa: BLE001
            self._failed("log", exc)

    def log_video(self, path: Path, env_frames: int) -> None:
        if self.run is None:
            return
        try:
            import wandb

            self.run.log({"eval/video": wandb.Video(str(path), format="mp4"), "env_frames": int(env_frames)})
        except Exception as exc:  # noqa: BLE001
            self._failed("video upload", exc)

    def finish(self, summary: dict | None = None) -> None:
        if self.run is None:
            return
        run, self.run = self.run, None
        try:
            values = {f"final/{k.split('/', 1)[-1]}": v for k, v in self.last_eval.items()}
            values.update({k if "/" in k else f"final/{k}": v for k, v in (summary or {}).items()})
            for key, value in values.items():
                value = _scalar(value)
                if value is not None:
                    run.summary[key] = value
            raised = sys.exc_info()[0]
            failed = raised is not None and not issubclass(raised, KeyboardInterrupt)
            run.finish(exit_code=1 if failed else 0)
        except Exception as exc:  # noqa: BLE001
            self._failed("finish", exc)


class TensorBoardTracker:
    """TensorBoard event files in ``RUN_DIR/tensorboard/``: the W&B scalars (``train/*``, ``eval/*``), each at its
    row's ``env_steps``. ``resumed_at``: the env steps a resumed run starts from; events an earlier session wrote
    after that step (rows a killed run wrote after its last checkpoint, written again now) are discarded."""

    SUBDIR = "tensorboard"

    def __init__(self, run_dir: Path, resumed_at: int | None = None):
        tensorboard = require("torch.utils.tensorboard", "tracking.tensorboard", "tensorboard", "tensorboard")
        self.log_dir = Path(run_dir) / self.SUBDIR
        self.writer = tensorboard.SummaryWriter(
            str(self.log_dir), purge_step=None if resumed_at is None else resumed_at + 1
        )

    def log_row(self, row: dict) -> None:
        if self.writer is None:
            return
        step = int(row.get("env_steps", 0))
        for name, value in wandb_names(row).items():
            if name not in ("env_frames", "env_steps", "wall_time", "chain_env_steps"):
                self.writer.add_scalar(name, value, global_step=step)

    def finish(self, summary: dict | None = None) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            writer.close()
