"""A custom encoder, registered from a user's module: one 3x3 convolution and a global max-pool.

``fn(obs_shape, cfg) -> nn.Module`` maps obs ``[B, *obs_shape]`` (images already scaled to [0, 1]) to flat features
``[B, F]``; the Q head (and the LSTM of recurrent agents) is built on top of it by drl. Trained on catch by
examples/catch-tiny.yaml and examples/train_from_python.py.
"""

from torch import nn

import drl


@drl.register_encoder("tiny")
def tiny_encoder(obs_shape, cfg) -> nn.Module:
    return nn.Sequential(nn.Conv2d(obs_shape[0], 32, 3, padding=1), nn.ReLU(), nn.Flatten())
