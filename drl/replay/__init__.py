"""Replay by job: frame storage, samplers, priorities, and the ``ReplayBuffer`` that composes them.

- ``storage.FrameStorage``: one ring per env stream holding one frame per step (plus action, reward, flags,
  extras, labels); frame stacks are rebuilt at sample time;
- ``transitions.TransitionSampler``: n-step transitions (DQN);
- ``sequences.SequenceSampler``: sequences with stored LSTM states, burn-in and overlap (DRQN), and
  ``SequenceStarts``, the rule of where sequences start;
- ``priorities.Prioritizer``: proportional priorities over a sampler's entries (sum tree, alpha, beta, R2D2's eta);
- ``buffer.ReplayBuffer``: the composition the training loop holds, fed one ``StepRecord`` per vector step.
"""

from drl.replay.buffer import ReplayBuffer, StepRecord, build_replay
from drl.replay.priorities import Prioritizer
from drl.replay.sequences import SequenceBatch, SequenceSampler, SequenceStarts
from drl.replay.storage import FrameStorage, gather_rows, stack_frames
from drl.replay.transitions import TransitionBatch, TransitionSampler, n_step_returns

__all__ = [
    "FrameStorage",
    "Prioritizer",
    "ReplayBuffer",
    "SequenceBatch",
    "SequenceSampler",
    "SequenceStarts",
    "StepRecord",
    "TransitionBatch",
    "TransitionSampler",
    "build_replay",
    "gather_rows",
    "n_step_returns",
    "stack_frames",
]
