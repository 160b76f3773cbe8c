"""The registered image encoders have the layers their papers give (shapes and parameter counts worked out by hand
from the layer lists, not read back from the code)."""

from __future__ import annotations

import pytest
import torch

from drl import config
from drl.errors import UserError
from drl.networks import QNetwork


def conv_params(c_in: int, c_out: int, kernel: int) -> int:
    return c_out * c_in * kernel * kernel + c_out


def test_nips_encoder_is_mnih_2013():
    """Mnih et al. 2013 on 4 stacked 84x84 frames: 16@8x8/4 -> 20x20, 32@4x4/2 -> 9x9, a 256-unit hidden layer."""
    net = QNetwork(config.NetworkConfig(encoder="nips", hidden=256), (4, 84, 84), num_actions=6)
    obs = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    assert net.encoder(obs.float() / 255).shape == (3, 32 * 9 * 9)
    assert net(obs).shape == (3, 6)
    expected = conv_params(4, 16, 8) + conv_params(16, 32, 4) + (32 * 9 * 9 + 1) * 256 + (256 + 1) * 6
    assert sum(p.numel() for p in net.parameters()) == expected


def test_nips_encoder_is_smaller_than_nature():
    """The point of the NIPS encoder: fewer convolution weights and features than the Nature encoder's
    32@8x8/4, 64@4x4/2, 64@3x3/1 (3,136 features)."""
    nature = QNetwork(config.NetworkConfig(encoder="nature", hidden=256), (4, 84, 84), num_actions=6)
    nips = QNetwork(config.NetworkConfig(encoder="nips", hidden=256), (4, 84, 84), num_actions=6)
    conv_weights = {
        n: sum(p.numel() for p in net.encoder.parameters()) for n, net in (("nature", nature), ("nips", nips))
    }
    assert conv_weights["nature"] == conv_params(4, 32, 8) + conv_params(32, 64, 4) + conv_params(64, 64, 3)
    assert conv_weights["nips"] < conv_weights["nature"] / 5


def test_nips_encoder_refuses_frames_too_small_for_it():
    with pytest.raises(UserError, match="network.encoder=nips does not fit observations of shape"):
        QNetwork(config.NetworkConfig(encoder="nips"), (1, 10, 5), num_actions=3)
