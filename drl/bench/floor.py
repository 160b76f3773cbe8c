"""The plain-torch parts of the Pong loop floor: a Nature-CNN DQN update and a greedy action choice, with nothing of
drl's in them (``drl.bench.update`` times them against drl's; ``drl.bench.paired_floor`` beside a drl run)."""

from __future__ import annotations


def nature_cnn(num_actions: int):
    """The Nature-CNN Q-network in plain torch (84x84, 4 stacked frames)."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(4, 32, 8, stride=4),
        nn.ReLU(),
        nn.Conv2d(32, 64, 4, stride=2),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3136, 512),
        nn.ReLU(),
        nn.Linear(512, num_actions),
    )


def _autocast(device, bf16: bool):
    """A fresh bf16 autocast context for ``device`` per call, or a no-op one."""
    from contextlib import nullcontext

    import torch

    return (lambda: torch.autocast(torch.device(device).type, dtype=torch.bfloat16)) if bf16 else nullcontext


def floor_update_fn(device, batch: int, bf16: bool, num_actions: int = 6, double: bool = True):
    """One plain-torch Nature-CNN DQN update on fixed uint8 batches already on the device: double DQN's target
    (online argmax, target value), or with ``double=False`` vanilla DQN's (the target's max, as SB3 DQN)."""
    import copy

    import torch
    import torch.nn.functional as F

    net = nature_cnn(num_actions).to(device)
    target = copy.deepcopy(net).requires_grad_(False)
    try:
        opt = torch.optim.Adam(net.parameters(), lr=1e-4, eps=1.5e-4, fused=True)
    except (RuntimeError, TypeError):
        opt = torch.optim.Adam(net.parameters(), lr=1e-4, eps=1.5e-4)
    g = torch.Generator(device="cpu").manual_seed(0)
    obs = torch.randint(0, 256, (batch, 4, 84, 84), generator=g, dtype=torch.uint8).to(device)
    nxt = torch.randint(0, 256, (batch, 4, 84, 84), generator=g, dtype=torch.uint8).to(device)
    actions = torch.randint(0, num_actions, (batch,), generator=g).to(device)
    rewards = torch.randn(batch, generator=g).to(device)
    discounts = torch.full((batch,), 0.99).to(device)
    cast = _autocast(device, bf16)
    params = list(net.parameters())

    def next_value(x):
        if not double:
            return target(x).float().max(1).values
        best = net(x).float().argmax(1, keepdim=True)
        return target(x).float().gather(1, best).squeeze(1)

    def update():
        with cast():
            q = net(obs.float().div_(255.0)).float()
            with torch.no_grad():
                y = rewards + discounts * next_value(nxt.float().div_(255.0))
        loss = F.huber_loss(q.gather(1, actions[:, None]).squeeze(1), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()

    return update


def floor_act_fn(device, batch: int, bf16: bool, num_actions: int = 6):
    """One plain-torch greedy action choice: a Nature-CNN forward on a uint8 batch on the device, the argmax, the
    actions on the host (where an env takes them)."""
    import torch

    net = nature_cnn(num_actions).to(device).requires_grad_(False)
    obs = torch.randint(0, 256, (batch, 4, 84, 84), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    obs = obs.to(device)
    cast = _autocast(device, bf16)

    def act():
        with torch.inference_mode(), cast():
            return net(obs.float().div_(255.0)).argmax(1).cpu()

    return act
