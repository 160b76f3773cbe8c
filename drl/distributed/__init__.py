"""Distributed training on Ray, Ape-X (DQN) and R2D2 (DRQN) style: many collectors, one learner.

``python -m drl.train EXPERIMENT distributed.collectors=N`` runs any experiment this way (``docs/distributed.md``):
- ``collector``: Ray actors, each a vector env and a CPU copy of the agent with its own epsilon, sending chunks of
  steps (with the acting LSTM state where sequences start) and initial priorities computed on them;
- ``learner``: the prioritized replay (one stream per collector env), updates on the training device, weights
  published through the object store every ``distributed.weights_interval`` updates, metrics, evaluation and
  checkpoints by the same ``drl.learner_core.LearnerCore`` that ``drl.loop.Trainer`` owns;
- ``chunk``: what crosses the network and how it is stored; ``cluster``: Ray itself (optional: ``pip install
  -e ".[ray]"``), the local or joined cluster and the actor pool.
"""

from __future__ import annotations

from drl.distributed.cluster import INSTALL_HINT, require_ray

__all__ = ["INSTALL_HINT", "require_ray", "trainer_class"]


def trainer_class(cfg):
    """``drl.loop.Trainer`` for ``distributed.collectors == 0``, else ``Learner`` (a one-line error without Ray)."""
    if cfg.distributed.collectors == 0:
        from drl.loop import Trainer

        return Trainer
    require_ray(cfg.distributed.address)
    from drl.distributed.learner import Learner

    return Learner
