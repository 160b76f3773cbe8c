"""Collectors: Ray actors that step a vector env with a CPU copy of the agent and send ``Chunk``s to the learner.

Each collector holds E envs (``make_env``), the agent (``make_agent`` on the CPU) and its own epsilon, Ape-X's
``eps_i = eps_base ** (1 + eps_alpha * i / (N - 1))``. The learner keeps ``distributed.inflight`` ``collect``
calls queued per collector and passes its newest published weights (an ObjectRef inside a list, so Ray does not
fetch them when they did not change) with each call; the collector loads them only when their version is new.
The class is plain Python: ``remote_class`` wraps it for Ray, so importing this module needs no Ray.
"""

from __future__ import annotations

import os
import time
import uuid

import torch

from drl.agent import epsilon_greedy
from drl.distributed.chunk import Chunk, sequence_priorities, td_priorities
from drl.replay.sequences import SequenceStarts
from drl.vec_env import fault_counters, make_env


def apex_epsilon(index: int, count: int, base: float = 0.4, alpha: float = 7.0) -> float:
    """Ape-X's exploration rate of collector ``index`` of ``count``: ``base ** (1 + alpha * i / (N - 1))``."""
    return base if count == 1 else base ** (1 + alpha * index / (count - 1))


def collector_seed(seed: int, index: int, env_steps: int = 0) -> int:
    """The seed of collector ``index`` of a run seeded ``seed`` whose learner had counted ``env_steps`` env steps
    when it started the collector (0 in a new run, the checkpoint's in a resumed one, so that a resumed run plays
    new episodes, as a resumed single-process run's envs do). Its envs, its epsilon draws and its process's random
    state start from it; a collector that Ray restarted adds its process id, to play new episodes too."""
    return seed + 100_003 * (index + 1) + env_steps


def _restarted_by_ray() -> bool:
    """This actor process replaces one that died (False outside Ray, e.g. in tests)."""
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized() and ray.get_runtime_context().was_current_actor_reconstructed


class Collector:
    """One collector (a Ray actor): ``info()``, ``pid()``, ``collect(weights, version, explore) -> Chunk``.
    ``env_steps``: the learner's env steps when it starts the collector (seeds it, ``collector_seed``).

    A set-up error (a bad env setting, a missing game) is kept and reported by ``info()``, so the learner stops
    with one line instead of Ray printing the traceback of a dead actor."""

    def __init__(self, cfg_data: dict, index: int, count: int, env_steps: int = 0):
        self.error = None
        try:
            self._setup(cfg_data, index, count, env_steps)
        except Exception as exc:  # noqa: BLE001 - reported by info() / collect()
            from drl.errors import UserError, first_line

            self.error = (
                first_line(exc, 300) if isinstance(exc, UserError) else f"{type(exc).__name__}: {first_line(exc, 300)}"
            )

    def _setup(self, cfg_data: dict, index: int, count: int, env_steps: int) -> None:
        from drl import config, runtime
        from drl.agent import EnvSpec, make_agent

        cfg = config.validate(cfg_data)  # imports the config's user modules here too
        dist = cfg.distributed
        if dist.collector_nice:
            os.nice(dist.collector_nice)
        torch.set_num_threads(dist.collector_threads)
        self.cfg, self.index = cfg, index
        self.epsilon = apex_epsilon(index, count, dist.eps_base, dist.eps_alpha)
        self.incarnation = uuid.uuid4().hex[:12]
        restarted = _restarted_by_ray()
        seed = self.seed = collector_seed(cfg.seed, index, env_steps) + (os.getpid() if restarted else 0)
        runtime.seed_everything(seed)
        cpu = torch.device("cpu")
        self.env = make_env(
            cfg.env, cpu, seed, num_envs=dist.envs_per_collector or cfg.env.num_envs, labels=cfg.agent.aux.features
        )
        self.step = self.env.reset(seed=seed)
        self.spec = EnvSpec.of(self.env, self.step.obs)
        self.agent = make_agent(
            cfg, self.spec, cpu, runtime.use_bf16(cfg.compute, cpu), torch.Generator().manual_seed(seed)
        )
        E = self.env.num_envs
        self.state = self.agent.initial_state(E)
        self.first = self.step.reset.clone()
        self.version = -1
        self.T = max(1, dist.chunk_steps // E)
        self.channels = self.spec.obs_shape[0] // self.env.frame_stack  # of one frame (replay stores one)
        self.sequences = self.agent.sampler == "sequences"
        # the replay's rule, to send the acting state where the replay stores a sequence start
        self.starts = SequenceStarts(E, cfg.replay.sequence_length - cfg.replay.sequence_overlap)
        self.priorities = cfg.replay.prioritized or dist.prioritized

    def info(self) -> dict:
        if self.error is not None:
            return {"error": self.error, "pid": os.getpid()}
        env, spec = self.env, self.spec
        return {
            "obs_shape": list(spec.obs_shape),
            "obs_dtype": str(spec.obs_dtype).removeprefix("torch."),
            "num_actions": spec.num_actions,
            "num_extras": spec.num_extras,
            "num_envs": env.num_envs,
            "frame_stack": env.frame_stack,
            "frames_per_step": env.frames_per_step,
            "chunk_vector_steps": self.T,
            "epsilon": self.epsilon,
            "pid": os.getpid(),
            "seed": self.seed,
            "incarnation": self.incarnation,
        }

    def pid(self) -> int:
        return os.getpid()

    # ------------------------------------------------------------------------------------------------ acting
    @torch.no_grad()
    def _act(self, obs, extras, epsilon: float):
        """Actions, the next state and Q ``[E, A]`` (None when not computed: random acting, or no priorities).

        With priorities, epsilon-greedy on ``agent.action_values``, whose Q values the priorities come from."""
        agent = self.agent
        if epsilon >= 1.0 or not self.priorities:
            actions, state = agent.act(obs, self.state, epsilon, extras)
            return actions, state, None
        q, state = agent.action_values(obs, self.state, extras)
        return epsilon_greedy(q, epsilon, obs.shape[0], self.spec.num_actions, agent.generator), state, q

    def collect(self, weights: list, version: int, explore: bool = False) -> Chunk:
        """Step T vector steps (``explore``: uniformly random actions, the learner's warm-up) and return them."""
        if self.error is not None:
            raise RuntimeError(f"collector {self.index} could not start: {self.error}")
        t0 = time.perf_counter()
        if weights and version != self.version:
            import ray

            self.agent.load_acting_weights(ray.get(weights[0]))
            self.version = version
        cfg, c = self.cfg, self.channels
        epsilon = 1.0 if explore else self.epsilon
        cols: dict[str, list[torch.Tensor | None]] = {
            k: []
            for k in (
                "frames",
                "first",
                "actions",
                "rewards",
                "terminated",
                "truncated",
                "reset",
                "extras",
                "labels",
                "dropped",
                "q",
            )
        }
        finals: dict[str, list] = {"rows": [], "frames": [], "extras": [], "labels": []}
        state_rows, states, episodes = [], [], []
        for t in range(self.T):
            obs, extras, labels = self.step.obs, self.step.extras, self.step.labels
            if self.sequences:  # the replay stores the acting state where a sequence starts
                rows = self.starts.step(self.first.numpy())
                if len(rows) and self.state is not None:
                    state_rows += [(t, int(e)) for e in rows]
                    states.append(torch.stack([x[0, torch.from_numpy(rows)] for x in self.state], dim=1).float())
            actions, state, q = self._act(obs, extras, epsilon)
            step = self.env.step(actions)
            reward = step.reward * cfg.env.reward_scale if cfg.env.reward_scale != 1.0 else step.reward
            for key, value in (
                ("frames", obs[:, -c:]),
                ("first", self.first),
                ("actions", actions),
                ("rewards", reward),
                ("terminated", step.terminated),
                ("truncated", step.truncated),
                ("reset", step.reset),
                ("extras", extras),
                ("labels", labels),
                ("dropped", step.dropped),
                ("q", q),
            ):
                cols[key].append(None if value is None else value.detach().clone())
            if step.final_obs is not None and bool(step.reset.any()):
                rows = step.reset.nonzero().squeeze(1)
                finals["rows"] += [(t, int(e)) for e in rows]
                finals["frames"].append(step.final_obs[rows, -c:].clone())
                for key, value in (("extras", step.final_extras), ("labels", step.final_labels)):
                    if value is not None:
                        finals[key].append(value[rows].clone())
            episodes += step.episodes
            self.state = self.agent.reset_state(state, step.reset)
            self.first, self.step = step.reset, step
        return self._chunk(cols, finals, state_rows, states, episodes, time.perf_counter() - t0)

    def collect_split(self, weights: list, version: int, explore: bool = False) -> tuple:
        """``collect`` as ``(ChunkInfo, Chunk)``, called with ``num_returns=2``: the learner fetches the small info
        and hands the chunk's object reference on (to the replay actor, or fetches it itself)."""
        chunk = self.collect(weights, version, explore)
        return chunk.info(), chunk

    def _chunk(self, cols, finals, state_rows, states, episodes, seconds) -> Chunk:
        stack = lambda key: torch.stack(cols[key])  # noqa: E731   (columns every step has)
        maybe_stack = lambda key: None if cols[key][0] is None else stack(key)  # noqa: E731
        final = lambda key: torch.cat(finals[key]) if finals[key] else None  # noqa: E731
        frames = stack("frames")
        chunk = Chunk(
            collector=self.index,
            incarnation=self.incarnation,
            pid=os.getpid(),
            version=self.version,
            seconds=seconds,
            frames=frames,
            first=stack("first"),
            actions=stack("actions").long(),
            rewards=stack("rewards").float(),
            terminated=stack("terminated"),
            truncated=stack("truncated"),
            reset=stack("reset"),
            final_rows=torch.tensor(finals["rows"], dtype=torch.long).view(-1, 2),
            final_frames=torch.cat(finals["frames"]) if finals["frames"] else frames.new_zeros((0, *frames.shape[2:])),
            extras=maybe_stack("extras"),
            final_extras=final("extras"),
            labels=maybe_stack("labels"),
            final_labels=final("labels"),
            dropped=None
            if all(d is None for d in cols["dropped"])
            else torch.stack([torch.zeros_like(cols["reset"][0]) if d is None else d for d in cols["dropped"]]),
            state_rows=torch.tensor(state_rows, dtype=torch.long).view(-1, 2) if states else None,
            states=torch.cat(states) if states else None,
            episodes=episodes,
            faults=fault_counters(self.env),
        )
        if cols["q"][0] is not None and all(q is not None for q in cols["q"]):
            chunk.priorities = self._priorities(chunk, torch.stack(cols["q"]))
        return chunk

    @torch.no_grad()
    def _priorities(self, chunk: Chunk, q: torch.Tensor) -> torch.Tensor:
        """Initial priorities ``[T, E]`` from the Q values seen while acting (plus one forward pass for the
        observation after the chunk, without advancing the acting state)."""
        cfg = self.cfg
        q_next, _ = self.agent.action_values(self.step.obs, self.state, self.step.extras)
        td = td_priorities(
            torch.cat([q, q_next[None]]),
            chunk.actions,
            chunk.rewards,
            chunk.terminated,
            chunk.truncated,
            chunk.reset,
            cfg.agent.n_step,
            cfg.agent.gamma,
        )
        if self.sequences:
            starts = torch.zeros_like(chunk.reset)
            if chunk.state_rows is not None:
                starts[chunk.state_rows[:, 0], chunk.state_rows[:, 1]] = True
            td = sequence_priorities(td, starts, chunk.reset, cfg.replay.sequence_length, cfg.replay.priority_eta)
        if chunk.dropped is not None:
            td[chunk.dropped] = float("nan")  # a lost step stores no transition
        return td


def remote_class(dist):
    """``Collector`` as a Ray actor class: restarted up to ``max_restarts`` times, its calls retried after a
    restart (so a killed collector costs the steps of its unfinished chunk, nothing else)."""
    import ray

    return ray.remote(num_cpus=dist.collector_cpus, max_restarts=dist.max_restarts, max_task_retries=-1)(Collector)
