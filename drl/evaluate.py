"""``python -m drl.evaluate RUN_DIR [--checkpoint PATH] [--episodes N] [--video out.mp4] [--epsilon E]``.

Loads RUN_DIR/config.yaml and a checkpoint (default RUN_DIR/checkpoints/latest.pt), or the model of a folder
written by ``drl.export`` (RUN_DIR may also be ``zoo:NAME``, an agent shipped with drl; ``--list-zoo`` lists
them), plays whole evaluation episodes with the training code's own ``drl.evaluation.evaluate``, prints a score table
and, with ``--video``, writes an mp4 of env 0's episodes (its share of the N episodes), upscaled with
nearest-neighbour so small worlds are visible. The video shows the game's own colour screen where the env kind can
give it (Atari, Gym; ``--video-view game``, the default there) or the agent's input, its newest frame
(``--video-view agent``; the default for other kinds). With tracking on (config ``tracking.wandb`` or ``--wandb``)
the scores and the video go to a W&B run with job type ``eval`` in the experiment's group.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drl import checkpoint
from drl.cli import run_cli
from drl.errors import UserError

VIDEO_TARGET = 320  # pixels on the longer side of the upscaled frame (integer nearest-neighbour factor)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m drl.evaluate", description="Evaluate a trained run's checkpoint; optionally record a video."
    )
    parser.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        nargs="?",
        help="a run directory written by drl.train, a folder written by drl.export, or zoo:NAME",
    )
    parser.add_argument("--list-zoo", action="store_true", help="list the trained agents shipped with drl")
    parser.add_argument("--checkpoint", metavar="PATH", help="checkpoint file (default RUN_DIR/checkpoints/latest.pt)")
    parser.add_argument(
        "--episodes", metavar="N", type=int, help="episodes to play (default: the config's eval.episodes)"
    )
    parser.add_argument(
        "--epsilon", metavar="E", type=float, help="exploration rate (default: the config's eval.epsilon)"
    )
    parser.add_argument(
        "--num-envs", metavar="N", type=int, help="envs stepping together (default min(eval.num_envs, N))"
    )
    parser.add_argument("--seed", type=int, help="env seed (default: the run's seed + 20000)")
    parser.add_argument("--video", metavar="OUT.mp4", help="write an mp4 of the agent playing env 0")
    parser.add_argument(
        "--video-view",
        choices=["game", "agent"],
        help="what the video shows: the game's colour screen (default where the env can give it) "
        "or the agent's input frames",
    )
    parser.add_argument(
        "--fps", type=int, help="video frames per second (default: real time for Atari/Doom, 8 otherwise)"
    )
    parser.add_argument(
        "--wandb",
        choices=["auto", "online", "offline", "off"],
        help="W&B tracking for this evaluation (default: the config's tracking.wandb)",
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="device (default: the config's device)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser.parse_args(argv)


def default_fps(env) -> int:
    """Real time for emulators that have one (``env.emulator_fps``: Atari 60, Doom 35), else 8 agent steps/s."""
    emulator_fps = getattr(env, "emulator_fps", None)
    return max(1, round(emulator_fps / env.frames_per_step)) if emulator_fps else 8


class VideoRecorder:
    """``on_step`` callback for ``drl.evaluation.evaluate``: writes env 0's frames until it has finished ``episodes``.

    Per episode that is its first frame, the frame after every step and the terminal frame, so ``length + 1``
    frames (``length`` where the env cannot give the terminal screen). ``view="agent"``: the newest frame of the
    stacked observation (``obs`` / ``final_obs``); ``view="game"``: the env's colour screen (``screen`` /
    ``final_screen``, from an env made with ``screens=True``). Frames are upscaled by an integer factor (nearest)
    and padded to a multiple of 16 pixels for the H.264 encoder.
    """

    def __init__(self, path: Path, frame_channels: int, episodes: int, fps: int, view: str = "agent"):
        import imageio.v2 as imageio

        self.view = view
        self.path, self.channels, self.left = Path(path), frame_channels, episodes
        self.frames = 0
        self.size: tuple[int, int] | None = None  # (width, height) of the frames written
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.writer = imageio.get_writer(
                self.path,
                format="FFMPEG",
                mode="I",
                fps=fps,
                codec="libx264",
                pixelformat="yuv420p",
                macro_block_size=16,
            )
        except Exception as exc:  # noqa: BLE001 - missing ffmpeg, unwritable path
            raise UserError(
                f"cannot write video '{path}' ({str(exc).splitlines()[0][:120]}); "
                "check the path and that imageio-ffmpeg is installed"
            ) from None

    def _frame(self, image) -> np.ndarray:
        if self.view == "game":
            frame = np.ascontiguousarray(image)  # screen: [H, W, 3]
        else:
            frame = image[-self.channels :].cpu().numpy()  # newest frame of the observation: [C, H, W]
            frame = frame[:3] if frame.shape[0] >= 3 else np.repeat(frame[:1], 3, axis=0)
            frame = np.ascontiguousarray(frame.transpose(1, 2, 0))
        h, w = frame.shape[:2]
        k = max(1, round(VIDEO_TARGET / max(h, w)))
        frame = frame.repeat(k, axis=0).repeat(k, axis=1)
        ph, pw = -frame.shape[0] % 16, -frame.shape[1] % 16
        if ph or pw:
            frame = np.pad(frame, ((0, ph), (0, pw), (0, 0)))
        return frame

    def _write(self, image) -> None:
        frame = self._frame(image)
        self.size = (frame.shape[1], frame.shape[0])
        self.writer.append_data(frame)
        self.frames += 1

    def __call__(self, step) -> None:
        if self.left <= 0:
            return
        current, final = (step.screen, step.final_screen) if self.view == "game" else (step.obs, step.final_obs)
        if any(ep["env"] == 0 for ep in step.episodes):  # env 0 finished an episode in this step
            if final is not None:
                self._write(final[0])
            self.left -= 1
            if self.left <= 0:
                return
        self._write(current[0])

    def close(self) -> None:
        self.writer.close()


def format_table(summary: dict, episodes: int) -> str:
    columns = [("episodes", str(episodes))]
    for name, key in (
        ("mean", "return_mean"),
        ("median", "return_median"),
        ("std", "return_std"),
        ("min", "return_min"),
        ("max", "return_max"),
    ):
        columns.append((name, f"{summary[key]:.3f}"))
    for key, value in summary.items():
        if key.endswith("_mean") and key != "return_mean":
            columns.append((key[: -len("_mean")], f"{value:.3f}"))
    widths = [max(len(a), len(b)) for a, b in columns]
    header = "  ".join(a.rjust(w) for (a, _), w in zip(columns, widths))
    values = "  ".join(b.rjust(w) for (_, b), w in zip(columns, widths))
    return f"{header}\n{values}"


@dataclass
class Played:
    """What ``play`` returns: the episodes, their summary and how the video was made."""

    results: list[dict]
    summary: dict
    epsilon: float
    frames_per_step: int
    fps: int
    view: str
    video_frames: int = 0
    video_size: tuple[int, int] | None = None


def play(
    cfg,
    payload: dict,
    episodes: int,
    epsilon: float | None = None,
    num_envs: int | None = None,
    seed: int | None = None,
    device: str | None = None,
    video: Path | None = None,
    view: str | None = None,
    fps: int | None = None,
    video_episodes: int | None = None,
) -> Played:
    """Play ``episodes`` evaluation episodes with the weights of ``payload`` (a checkpoint, or an exported model),
    as the training loop evaluates; with ``video``, an mp4 of env 0's first ``video_episodes`` episodes (default:
    its share of the episodes)."""
    import torch  # heavy imports after argument checks

    from drl import runtime
    from drl.agent import EnvSpec, make_agent
    from drl.evaluation import evaluate, summarize
    from drl.vec_env import make_env, supports_screens

    epsilon = cfg.eval.epsilon if epsilon is None else epsilon
    num_envs = min(num_envs or cfg.eval.num_envs, episodes)
    seed = cfg.seed + 20_000 if seed is None else seed
    dev = runtime.resolve_device(device or cfg.device)
    runtime.keep_freed_memory(cfg.compute)
    runtime.configure_threads(cfg.compute)
    runtime.seed_everything(seed)
    view = view or ("game" if supports_screens(cfg.env.kind) else "agent")
    env = make_env(
        cfg.env,
        dev,
        seed,
        num_envs=num_envs,
        evaluation=True,
        max_frames=cfg.eval.max_frames,
        labels=cfg.agent.aux.features,  # the game-feature head's accuracy, when it has one
        screens=bool(video) and view == "game",
    )
    recorder = None
    try:
        first = env.reset(seed=seed)
        spec = EnvSpec.of(env, first.obs)
        checkpoint.check_fits(payload, spec.obs_shape, spec.num_actions, "pass the checkpoint of this run")
        agent = make_agent(
            cfg, spec, dev, runtime.use_bf16(cfg.compute, dev), torch.Generator(device=dev).manual_seed(seed)
        )
        checkpoint.load_agent_state(agent, payload, "pass the checkpoint of this run")
        fps = fps or default_fps(env)
        if video:
            recorder = VideoRecorder(
                Path(video), env.frame_channels, video_episodes or math.ceil(episodes / num_envs), fps, view
            )
        results = evaluate(agent, env, episodes, epsilon, on_step=recorder)
    finally:
        if recorder is not None:
            recorder.close()
        env.close()
    played = Played(results, summarize(results, env), epsilon, env.frames_per_step, fps, view)
    if recorder is not None:
        played.video_frames, played.video_size = recorder.frames, recorder.size
    return played


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.list_zoo:
        from drl import zoo

        print(zoo.format_list())
        return 0
    if args.run_dir is None:
        raise UserError("give a RUN_DIR (a run directory, an exported folder or zoo:NAME) or --list-zoo")
    if args.episodes is not None and args.episodes < 1:
        raise UserError(f"--episodes must be >= 1 (got {args.episodes})")
    if args.epsilon is not None and not 0.0 <= args.epsilon <= 1.0:
        raise UserError(f"--epsilon must be within [0, 1] (got {args.epsilon})")
    if args.num_envs is not None and args.num_envs < 1:
        raise UserError(f"--num-envs must be >= 1 (got {args.num_envs})")
    if args.fps is not None and args.fps < 1:
        raise UserError(f"--fps must be >= 1 (got {args.fps})")
    if args.video and Path(args.video).suffix.lower() != ".mp4":
        raise UserError(f"--video '{args.video}' must end in .mp4")
    from drl.api import load_policy

    run_dir, cfg, payload = load_policy(args.run_dir, args.checkpoint)
    episodes = args.episodes or cfg.eval.episodes
    played = play(
        cfg,
        payload,
        episodes,
        args.epsilon,
        args.num_envs,
        args.seed,
        args.device,
        Path(args.video) if args.video else None,
        args.video_view,
        args.fps,
    )
    env_steps = int(payload["counters"]["env_steps"])
    print(
        f"drl.evaluate: {args.run_dir} at {env_steps:,} env steps, epsilon {played.epsilon:g}, "
        f"{len(played.results)} episodes"
    )
    print(format_table(played.summary, len(played.results)))
    if args.video:
        assert played.video_size is not None  # the recorder wrote at least the first observation
        print(
            f"drl.evaluate: video {args.video} ({played.video_frames} frames of env 0's {played.view} view, "
            f"{played.video_size[0]}x{played.video_size[1]}, {played.fps} fps)"
        )
    track(cfg, run_dir, args, played, env_steps)
    return 0


def track(cfg, run_dir: Path, args: argparse.Namespace, played: Played, env_steps: int) -> None:
    """With tracking on, the scores (and the video) go to a W&B run of job type ``eval``."""
    from drl.tracking import WandbTracker

    if args.wandb:
        cfg.tracking.wandb = args.wandb
    if cfg.tracking.wandb == "off":
        return
    tracker = WandbTracker(cfg, run_dir, job_type="eval")
    frames = env_steps * played.frames_per_step
    tracker.log_row(
        {
            "event": "eval",
            "env_steps": env_steps,
            "frames": frames,
            "episodes": len(played.results),
            "epsilon": played.epsilon,
            **played.summary,
        }
    )
    if args.video:
        tracker.log_video(Path(args.video), frames)
    tracker.finish({"env_steps": env_steps})


if __name__ == "__main__":
    run_cli("drl.evaluate", main)
