"""``python -m drl.export`` on a short real catch run: the Hub folder's files, the model card's metadata (parsed from
its YAML front matter, and by huggingface_hub), the weights, the video, and loading the folder back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import imageio.v2 as imageio
import pytest
import torch
import yaml

import drl
from drl import checkpoint, runtime
from drl.exported import read_card
from tests import helpers
from tests.helpers import FAST_CATCH

pytestmark = pytest.mark.slow

ENV = {**os.environ, "TQDM_DISABLE": "1", "WANDB_MODE": "disabled"}
EPISODES = 6


def cli(module: str, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    return helpers.cli(module, *args, env=env or ENV)


def one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, (proc.returncode, proc.stderr[-3000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("drl.export: error: "), lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    run_dir, out = tmp / "run", tmp / "hub"
    proc = cli("drl.train", "catch", "total_steps=2000", *FAST_CATCH, "tracking.wandb=off", "--run-dir", run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = cli("drl.export", run_dir, out, "--episodes", EPISODES)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, out, proc


def test_the_folder_holds_the_card_config_weights_and_video(exported):
    run_dir, out, _ = exported
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.yaml", "model.safetensors", "replay.mp4"]
    assert yaml.safe_load((out / "config.yaml").read_text()) == yaml.safe_load((run_dir / "config.yaml").read_text())


def test_the_model_card_front_matter_is_hub_metadata_with_the_evaluation(exported):
    run_dir, out, _ = exported
    card = read_card(out / "README.md")
    assert card["library_name"] == "drl"
    assert {"reinforcement-learning", "deep-reinforcement-learning", "drl", "dqn", "catch"} <= set(card["tags"])
    (model,) = card["model-index"]
    (result,) = model["results"]
    assert result["task"]["type"] == "reinforcement-learning" and result["dataset"]["name"] == "catch"
    (metric,) = result["metrics"]
    assert metric["type"] == "mean_reward"
    mean, std = (float(x) for x in metric["value"].split(" +/- "))
    # the same evaluation drl.evaluate plays (same episodes, seed, epsilon): the card reports its mean and std
    proc = cli("drl.evaluate", run_dir, "--episodes", EPISODES, "--wandb", "off")
    assert proc.returncode == 0, proc.stderr[-3000:]
    values = proc.stdout.splitlines()[2].split()
    assert int(values[0]) == EPISODES and (mean, std) == (round(float(values[1]), 2), round(float(values[3]), 2))
    assert f"over {EPISODES} episodes" in (out / "README.md").read_text()

    hub = pytest.importorskip("huggingface_hub")
    (result,) = hub.ModelCard.load(out / "README.md").data.eval_results  # the Hub's own parser
    assert (result.task_type, result.dataset_name, result.metric_type) == (
        "reinforcement-learning",
        "catch",
        "mean_reward",
    )
    assert result.metric_value == metric["value"]


def test_the_model_card_says_how_and_where_the_run_was_trained(exported):
    run_dir, out, _ = exported
    card = (out / "README.md").read_text()
    (session,) = (json.loads(line) for line in (run_dir / "sessions.jsonl").read_text().splitlines())
    assert session["command"].startswith("python -m drl.train catch total_steps=2000 ") and session["command"] in card
    assert f"python -m drl.export {run_dir} {out} --episodes {EPISODES}" in card
    assert f"| {runtime.machine_info()['cpu']} | {os.cpu_count()} | cpu |" in card


def test_the_weights_are_the_online_network_only(exported):
    from safetensors import safe_open

    run_dir, out, _ = exported
    online = checkpoint.load(run_dir / "checkpoints" / "latest.pt")["agent"]["online"]
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        assert sorted(f.keys()) == sorted(online)
        for key in f.keys():
            assert torch.equal(f.get_tensor(key), online[key]), key
        metadata = f.metadata()
    assert metadata["format"] == "drl-model" and metadata["num_actions"] == "3" and metadata["dtype"] == "float32"
    assert metadata["env_steps"] == str(checkpoint.load(run_dir / "checkpoints" / "latest.pt")["counters"]["env_steps"])


def test_a_bfloat16_export_is_half_the_size_and_plays_its_rounded_weights(exported, tmp_path):
    from safetensors import safe_open

    run_dir, out, _ = exported
    half = tmp_path / "hub-bf16"
    proc = cli("drl.export", run_dir, half, "--episodes", 2, "--no-video", "--dtype", "bfloat16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    online = checkpoint.load(run_dir / "checkpoints" / "latest.pt")["agent"]["online"]
    with safe_open(str(half / "model.safetensors"), framework="pt") as f:
        assert f.metadata()["dtype"] == "bfloat16"
        for key in f.keys():
            assert torch.equal(f.get_tensor(key), online[key].to(torch.bfloat16)), key
    ratio = (half / "model.safetensors").stat().st_size / (out / "model.safetensors").stat().st_size
    assert 0.45 < ratio < 0.55, ratio
    assert "weights (bfloat16)" in (half / "README.md").read_text()
    # loading casts the rounded weights back into the float32 network: exactly the bf16 values
    agent = drl.load_agent(half)
    loaded = {k: v for k, v in agent.state_dict()["online"].items() if v.is_floating_point()}
    assert loaded and all(v.dtype == torch.float32 for v in loaded.values())
    for key, value in loaded.items():
        assert torch.equal(value, online[key].to(torch.bfloat16).float()), key
    assert not all(torch.equal(value, online[key]) for key, value in loaded.items())  # rounding did change them


def test_the_video_is_one_evaluation_episode(exported):
    _, out, _ = exported
    reader = imageio.get_reader(out / "replay.mp4", format="FFMPEG")
    frames = [frame for frame in reader]
    reader.close()
    assert len(frames) == 9 + 1  # a catch episode: its first frame and 9 steps
    assert frames[0].shape == (320, 160, 3) and frames[0].max() > 200


def test_the_loaded_folder_acts_like_the_run(exported):
    run_dir, out, _ = exported
    from_run, from_export = drl.load_agent(run_dir), drl.load_agent(out)
    assert from_export.spec == from_run.spec
    generator = torch.Generator().manual_seed(0)
    obs = torch.randint(0, 256, (256, *from_run.spec.obs_shape), dtype=torch.uint8, generator=generator)
    from drl.envs.torch_native import CatchEnv

    env = CatchEnv(64, seed=3)
    step = env.reset(seed=3)
    real = [step.obs]
    for _ in range(8):
        step = env.step(torch.randint(0, 3, (64,), generator=generator))
        real.append(step.obs)
    obs = torch.cat([obs, *real])
    a, _ = from_run.act(obs, None, epsilon=0.0)
    b, _ = from_export.act(obs, None, epsilon=0.0)
    assert torch.equal(a, b) and len(set(a.tolist())) > 1
    proc = cli("drl.evaluate", out, "--episodes", 4, "--wandb", "off")  # drl.evaluate loads the folder too
    assert proc.returncode == 0 and "4 episodes" in proc.stdout, proc.stderr[-3000:]


def test_no_video(exported, tmp_path):
    run_dir, _, _ = exported
    proc = cli("drl.export", run_dir, tmp_path / "hub", "--episodes", 2, "--no-video")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "hub" / "replay.mp4").exists()
    assert "replay.mp4" not in (tmp_path / "hub" / "README.md").read_text()


def test_an_existing_folder_is_refused(exported):
    run_dir, out, _ = exported
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    one_line_error(cli("drl.export", run_dir, out), "exists and is not an empty folder", "--overwrite")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_an_agent_without_an_online_network_is_refused_before_anything_is_played(exported, tmp_path):
    run_dir, _, _ = exported
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    latest = copy / "checkpoints" / "latest.pt"
    payload = checkpoint.load(latest)
    payload["agent"] = {"q_table": payload["agent"]["online"]}  # a plug-in agent's state under another name
    checkpoint.save(latest, payload)
    one_line_error(cli("drl.export", copy, tmp_path / "hub", "--episodes", 2), "no 'online' network")
    assert not (tmp_path / "hub").exists()


def test_push_without_a_login_says_how_to_log_in(exported, tmp_path):
    pytest.importorskip("huggingface_hub")
    run_dir, _, _ = exported
    env = {k: v for k, v in ENV.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
    env["HF_HOME"] = str(tmp_path / "hf-home")  # no stored token
    proc = cli("drl.export", run_dir, tmp_path / "hub", "--push", "someone/catch-dqn", env=env)
    one_line_error(proc, "hf auth login", "HF_TOKEN")
    assert not (tmp_path / "hub").exists(), "nothing is evaluated or written without a login"


def test_push_without_huggingface_hub_names_the_install(exported, tmp_path):
    run_dir, _, _ = exported
    fake = tmp_path / "shadow" / "huggingface_hub"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named huggingface_hub')\n")
    proc = cli(
        "drl.export",
        run_dir,
        tmp_path / "hub",
        "--push",
        "someone/catch-dqn",
        env={**ENV, "PYTHONPATH": str(fake.parent)},
    )
    one_line_error(proc, "pip install huggingface_hub", ".[hub]")
