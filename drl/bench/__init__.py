"""``python -m drl.bench [--quick] [--steps N] [--repeats R] [--out bench.json] [--skip-sb3]``: measured speed.

Everything is measured when it runs; no figure is written in. Sections:

1. ``pong``: env steps/s of full DQN training on Pong after ``learning_starts`` (acting + env + replay + updates),
   drl with SB3's hyperparameters (1 env, batch 32, train every 4, buffer 100k, target 1k, 1-step vanilla DQN),
   drl's own ``atari-pong`` config, and SB3 DQN (CnnPolicy, ``make_atari_env`` + 4-frame stack), run in turn
   A, B, C, A, B, C, ... ``--repeats`` times so that machine drift hits all of them alike.
2. ``doom``: the same for ViZDoom health_gathering (60x80 gray, frame skip 4): drl's ``doom-health-gathering``
   DRQN vs SB3 DQN through vizdoom's gymnasium env (resized to 60x80 gray, 4-frame stack).
3. ``update``: the raw update floor (one Nature-CNN double-DQN update in plain torch: online fwd+bwd, online and
   target fwd on the next obs, Huber, Adam, grad clip) at batch 32 and 64, fp32 and bf16 autocast, against
   drl's time per update in its loop (``replay.sample`` + ``agent.update`` + priority update + stat reads); and
   the other plain-torch parts of the Pong loop floor: the update at SB3's hyperparameters (vanilla DQN's target)
   and a greedy forward at batch 1 and 4. The loop floor (``report.loop_floor``) adds, per update, ``train_freq /
   num_envs`` x (that forward + one vector env step from ``vecenv``): what drl's Pong speed is judged against.
   The ``pong`` runs time the same parts themselves, in blocks between drl's training in the same process
   (``paired_floor``), and the share is judged from those; the sections' parts are the fallback.
4. ``replay``: replay bytes per transition from the tensors actually allocated (Atari 84x84, Doom 60x80), and
   SB3's buffer for comparison.
5. ``vecenv``: vector-env steps/s with random actions, delivered as drl ``VecStep`` tensors on the device (Atari
   from 1 env, SB3's setting).
6. ``memory``: peak RSS of every measurement's process (and of its child processes, e.g. Doom workers).

Each measurement runs in its own fresh process (``--task``), so peaks, thread settings and emulator state never
leak between them. Where CUDA is available the drl figures (and SB3's) are also taken with ``device=cuda``.

Modules: ``cli`` (arguments, the run, the child-task entry), ``measure`` (child processes, clocks, memory peaks),
``training`` (pong / doom training vs SB3, overlapped env stepping both ways), ``update`` (update floor and the
loop floor's parts), ``paired_floor`` (the loop floor timed beside a drl run), ``replay_bytes``, ``vecenv``, ``report`` (the loop floor, targets and tables).
"""
