"""``python -m drl.export RUN_DIR OUT_DIR [--episodes K] [--no-video] [--dtype bfloat16] [--push REPO_ID]``:
a trained agent as a folder ready for the Hugging Face Hub.

OUT_DIR gets ``model.safetensors`` (the online Q-network's weights only, float32, or bfloat16 at half the size
with ``--dtype bfloat16``; its metadata holds the weights' dtype, the observation shape and dtype, the number of
actions and extra inputs, and the env steps trained), ``config.yaml`` (the run's config),
``replay.mp4`` (one evaluation episode, the video ``drl.evaluate --video`` makes) and ``README.md``, a model card
whose YAML front matter is what the Hub shows: ``library_name``, ``tags`` and a ``model-index`` with the mean
reward ± std over the K episodes evaluated here. ``drl.load_agent(OUT_DIR)`` and ``python -m drl.evaluate OUT_DIR``
load the folder. ``--push REPO_ID`` uploads it with huggingface_hub (``pip install -e ".[hub]"``) when you are
logged in; otherwise one line says how to log in, before anything is evaluated or written.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml

from drl import config
from drl.checkpoint import cast_floats
from drl.cli import run_cli
from drl.errors import UserError, first_line, require
from drl.exported import CARD, CONFIG, MODEL, VIDEO, online_weights, weights_dtype, write_model
from drl.metrics import read_sessions

LOGIN_HINT = "run `hf auth login` (`huggingface-cli login` before huggingface_hub 1.0) or set HF_TOKEN"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m drl.export", description="Export a trained run as a Hugging Face Hub model folder."
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by drl.train")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="the folder to write (must be new or empty)")
    parser.add_argument("--episodes", metavar="K", type=int, help="evaluation episodes (default: eval.episodes)")
    parser.add_argument("--checkpoint", metavar="PATH", help="checkpoint file (default RUN_DIR/checkpoints/latest.pt)")
    parser.add_argument("--no-video", action="store_true", help="do not record replay.mp4")
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default="float32",
        help="the weights' dtype in model.safetensors; bfloat16 halves the file, and the evaluation plays the "
        "rounded weights (default float32)",
    )
    parser.add_argument("--push", metavar="REPO_ID", help="upload the folder to this Hub model repo (user/name)")
    parser.add_argument("--overwrite", action="store_true", help="replace the files of an existing OUT_DIR")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="device (default: the config's device)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------------------------- the model card
def env_id(cfg: config.Config) -> str:
    """The environment's usual name: a Gymnasium id, ``PongNoFrameskip-v4`` for Atari (the protocol of the SB3 zoo
    and CleanRL), ``doom-<scenario>``, else the env kind (``catch``, ``memory``)."""
    env = cfg.env
    if env.kind == "atari":  # the sections are the env kinds' own (drl.envs): read by name, not imported
        return "".join(part.capitalize() for part in getattr(env, "game").split("_")) + "NoFrameskip-v4"  # noqa: B009 (EnvSection to mypy)
    if env.kind == "doom":
        return f"doom-{getattr(env, 'doom').scenario}"  # noqa: B009
    return getattr(env, "id", None) or env.kind


def card_metadata(cfg: config.Config, summary: dict) -> dict:
    """The front matter the Hub reads: library, tags and the evaluation result as a ``model-index``."""
    env, algo = env_id(cfg), cfg.agent.algo
    return {
        "library_name": "drl",
        "tags": ["reinforcement-learning", "deep-reinforcement-learning", "drl", algo, env],
        "model-index": [
            {
                "name": f"{algo.upper()}-{env}",
                "results": [
                    {
                        "task": {"type": "reinforcement-learning", "name": "reinforcement-learning"},
                        "dataset": {"name": env, "type": env},
                        "metrics": [
                            {
                                "type": "mean_reward",
                                "name": "mean_reward",
                                "verified": False,
                                "value": f"{summary['return_mean']:.2f} +/- {summary['return_std']:.2f}",
                            }
                        ],
                    }
                ],
            }
        ],
    }


def model_card(
    cfg: config.Config,
    summary: dict,
    episodes: int,
    epsilon: float,
    env_steps: int,
    video: bool,
    provenance_lines: Sequence[str] = (),
    dtype: str = "float32",
) -> str:
    env, algo = env_id(cfg), cfg.agent.algo
    front = yaml.safe_dump(card_metadata(cfg, summary), sort_keys=False)
    a = cfg.agent
    settings = [
        ("experiment", cfg.name),
        ("algorithm", algo),
        ("encoder", cfg.network.encoder),
        ("env steps trained", f"{env_steps:,}"),
        ("learning rate", f"{a.lr:g}"),
        ("gamma", f"{a.gamma:g}"),
        ("n-step", a.n_step),
        ("batch size", a.batch_size),
        ("replay capacity", f"{cfg.replay.capacity:,}"),
        ("prioritized replay", cfg.replay.prioritized),
        ("seed", cfg.seed),
    ]
    lines = [
        f"---\n{front}---",
        f"# {algo.upper()} agent playing {env}",
        "",
        f"A value-based deep RL agent trained with drl (experiment `{cfg.name}`).",
        "",
        "## Evaluation",
        "",
        f"**mean_reward {summary['return_mean']:.2f} ± {summary['return_std']:.2f}** over {episodes} episodes "
        f"(epsilon {epsilon:g}; median {summary['return_median']:g}, min {summary['return_min']:g}, "
        f"max {summary['return_max']:g}). Scores are whole-episode, unclipped returns.",
        "",
    ]
    if video:
        lines += [f"One evaluation episode: [`{VIDEO}`]({VIDEO})", ""]
    lines += [
        "## Use",
        "",
        "```python",
        "import drl",
        "",
        'agent = drl.load_agent("path/to/this/folder")  # a folder downloaded from the Hub, or "zoo:NAME"',
        "actions, state = agent.act(obs, agent.initial_state(len(obs)), epsilon=0.0)",
        "```",
        "",
        "```bash",
        f"python -m drl.evaluate path/to/this/folder --episodes {episodes} --video play.mp4",
        "```",
        "",
        "## Training",
        "",
        "| setting | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in settings],
        "",
        f"The full config is `{CONFIG}`; `{MODEL}` holds the online Q-network's weights ({dtype}).",
        "",
        *provenance_lines,
    ]
    return "\n".join(lines)


def provenance(sessions: list[dict], parent: str | None, export_command: str) -> list[str]:
    """The card's "Provenance" section: how the run was trained (``RUN_DIR/sessions.jsonl``, one line per start
    of training) and on which machine, and the command that exported it."""
    lines = ["## Provenance", ""]
    if parent:
        lines += [f"Started from the weights of the run `{parent}` (`--init-from`).", ""]
    if not sessions:
        lines += ["The run predates `sessions.jsonl`: its training command and machine are not recorded.", ""]
    else:
        lines += ["Trained with (one line per start of training; a resumed run has several):", "", "```bash"]
        lines += [s["command"] for s in sessions]
        lines += ["```", "", "| started (UTC) | from env step | CPU | cores | device | bf16 | threads | torch |"]
        lines += ["|---|---|---|---|---|---|---|---|"]
        for s in sessions:
            m = s.get("machine", {})
            lines.append(
                f"| {s['started']} | {s['start_env_steps']:,} | {m.get('cpu', '?')} | {m.get('cores', '?')} | "
                f"{s['device']} | {'on' if s['bf16'] else 'off'} | {s['threads']} | {m.get('torch', '?')} |"
            )
        lines.append("")
    lines += ["Exported with:", "", "```bash", export_command, "```", ""]
    return lines


# ------------------------------------------------------------------------------------------------- the CLI
def hub_token():
    """(huggingface_hub, token) for ``--push``, or a one-line error saying how to log in."""
    hub = require("huggingface_hub", "--push", "hub")
    token = hub.get_token()
    if not token:
        raise UserError(f"--push needs a Hugging Face login; {LOGIN_HINT}, then export again")
    return hub, token


def push(hub, token: str, folder: Path, repo_id: str) -> str:
    try:
        api = hub.HfApi(token=token)
        url = api.create_repo(repo_id, repo_type="model", exist_ok=True)
        api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message="Upload drl agent"
        )
    except Exception as exc:  # noqa: BLE001 - network, permissions, bad repo id: one line
        raise UserError(
            f"upload to {repo_id} failed ({first_line(exc, 160)}); the folder {folder} is complete, push it again later"
        ) from None
    return str(url)


def prepare_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not overwrite)):
        raise UserError(f"'{out}' exists and is not an empty folder; pass another OUT_DIR or --overwrite")
    out.mkdir(parents=True, exist_ok=True)


def export(
    cfg: config.Config,
    payload: dict,
    out: Path,
    episodes: int,
    video: bool = True,
    device: str | None = None,
    provenance_lines: Sequence[str] = (),
):
    """Write the folder: evaluate ``episodes`` episodes (recording one), then the model, config and model card.
    ``payload``'s online weights are written in their own dtype (``main`` rounds them for ``--dtype``)."""
    from drl.evaluate import play

    played = play(cfg, payload, episodes, device=device, video=out / VIDEO if video else None, video_episodes=1)
    write_model(out / MODEL, payload)
    (out / CONFIG).write_text(config.to_yaml(cfg))
    (out / CARD).write_text(
        model_card(
            cfg,
            played.summary,
            len(played.results),
            played.epsilon,
            int(payload["counters"]["env_steps"]),
            video,
            provenance_lines,
            weights_dtype(payload["agent"]["online"]),
        )
    )
    return played


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.episodes is not None and args.episodes < 1:
        raise UserError(f"--episodes must be >= 1 (got {args.episodes})")
    hub, token = hub_token() if args.push else (None, None)  # before the evaluation: no login, nothing done
    from drl.api import load_policy

    _, cfg, payload = load_policy(args.run_dir, args.checkpoint)
    # checked before anything is evaluated or written; the card's score is the score of the weights written
    payload["agent"]["online"] = cast_floats(online_weights(payload), getattr(torch, args.dtype))
    out = Path(args.out_dir)
    created = not out.exists()
    prepare_out_dir(out, args.overwrite)
    try:
        parent = cfg.init_from.run_dir if cfg.init_from is not None else None
        lines = provenance(read_sessions(Path(args.run_dir)), parent, shlex.join(["python", "-m", "drl.export", *argv]))
        played = export(cfg, payload, out, args.episodes or cfg.eval.episodes, not args.no_video, args.device, lines)
    except BaseException:
        if created:  # a failed export leaves no half-written folder behind
            shutil.rmtree(out, ignore_errors=True)
        raise
    files = ", ".join(f for f in (MODEL, CONFIG, CARD, VIDEO) if (out / f).is_file())
    print(
        f"drl.export: {out}: {files}; mean_reward {played.summary['return_mean']:.2f} +/- "
        f"{played.summary['return_std']:.2f} over {len(played.results)} episodes"
    )
    if args.push:
        assert token is not None  # hub_token() ran for --push
        print(f"drl.export: pushed to {push(hub, token, out, args.push)}")
    return 0


if __name__ == "__main__":
    run_cli("drl.export", main)
