"""Evaluation episodes, shared by training runs (single-process and distributed) and ``python -m drl.evaluate``:
``evaluate`` plays whole episodes epsilon-greedy, ``summarize`` reduces them to one row of measures."""

from __future__ import annotations

import numpy as np
import torch

from drl.vec_env import episode_summary, unpack_labels


def evaluate(agent, env, episodes: int, epsilon: float, on_step=None, seed: int | None = None, stop=None) -> list[dict]:
    """Play whole episodes with epsilon-greedy; each env contributes a fixed quota so short episodes are not favoured.

    ``on_step(step)``, if given, sees the reset ``VecStep`` and every stepped one (e.g. to record video frames).
    ``seed`` reseeds the env's reset; ``stop()``, if given and true, ends early (fewer episodes are returned).
    When the env gives game-feature labels, each episode also reports ``aux_accuracy``: the fraction of its
    frames' features the agent's game-feature head (``agent.predict_features``) got right.
    """
    quota = np.full(env.num_envs, episodes // env.num_envs)
    quota[: episodes % env.num_envs] += 1
    results: list[dict] = []
    step = env.reset(seed=seed)
    if on_step is not None:
        on_step(step)
    state = agent.initial_state(env.num_envs)
    correct = frames = None  # per env, since its episode started: summed accuracy of the head, frames seen
    while len(results) < episodes and not (stop is not None and stop()):
        if step.labels is not None:
            predicted = agent.predict_features(step.obs, step.extras)  # bool [N, F]
            hit = (predicted == unpack_labels(step.labels, predicted.shape[1]).bool()).float().mean(1)
            correct, frames = (
                (hit, torch.ones_like(hit)) if correct is None or frames is None else (correct + hit, frames + 1)
            )
        actions, state = agent.act(step.obs, state, epsilon, step.extras)
        step = env.step(actions)
        if on_step is not None:
            on_step(step)
        state = agent.reset_state(state, step.reset)
        for ep in step.episodes:
            if correct is not None and frames is not None:
                ep["aux_accuracy"] = float(correct[ep["env"]] / frames[ep["env"]])
            if quota[ep["env"]] > 0:
                quota[ep["env"]] -= 1
                results.append(ep)
        if correct is not None and frames is not None:
            correct, frames = correct.masked_fill(step.reset, 0.0), frames.masked_fill(step.reset, 0.0)
    return results


def summarize(episodes: list[dict], env=None) -> dict:
    """Mean of every episode measure (``<measure>_mean``; return also median, std, min, max), then the measures
    over all the episodes that ``env`` adds (``drl.vec_env.episode_summary``: Doom's ``kd``, ``frags_per_minute``)."""
    out = {}
    for key in episodes[0]:
        if key == "env":
            continue
        values = np.array([ep[key] for ep in episodes], dtype=np.float64)
        prefix = "return" if key == "return" else key
        out[f"{prefix}_mean"] = float(values.mean())
        if key == "return":
            out["return_median"] = float(np.median(values))
            out["return_std"] = float(values.std())
            out["return_min"], out["return_max"] = float(values.min()), float(values.max())
    return {**out, **episode_summary(env, episodes)}
