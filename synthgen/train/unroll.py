"""Unrolled GAN (Metz et al. 2016): G is judged by D as it will be after k more of its own updates.

G's loss f_K(theta_G, theta_D) = f(theta_G, theta_D^K), with theta_D^0 = D's
weights after its real update and theta_D^(k+1) one Adam step of D's own loss
from theta_D^k. The unrolled weights are a dict run through
torch.func.functional_call: D itself, its buffers and its optimiser state are
never touched, so D's real update is exactly that of an ordinary step.

Choices, and why:
- The unrolled steps are Adam steps with D's optimiser state (moments, step
  count, lr, betas, eps) copied, as the paper unrolled D's own optimiser; the
  update is written out so that it is differentiable.
- With backprop (train.unroll_backprop, the paper's surrogate) G's gradient
  flows through all k updates (second-order terms); without, each step's
  weights are detached and G only sees the look-ahead D's judgement.
- All k steps use this step's one real and one fake batch (as the authors'
  code, which fed one minibatch per iteration); D's loss in them is its
  adversarial (and AC-GAN class) loss, without R1/R2/gradient penalties or
  LeCam, which shape D but are not what G anticipates.
- Under DDP every process unrolls against its own shard, without averaging
  the unrolled gradients across processes (G's own gradient is averaged).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

Weights = dict[str, torch.Tensor]


def unrolled_weights(
    network: nn.Module, optimizer: torch.optim.Adam, loss_of: Callable[[Weights], torch.Tensor], steps: int, backprop: bool
) -> Weights:
    """network's parameters and buffers after `steps` Adam steps on loss_of(weights), as a functional_call dict."""
    params = {name: p.detach().requires_grad_() for name, p in network.named_parameters()}
    # Spectral norm's power-iteration vectors (and batch-norm statistics) move in copies, never in D.
    buffers = {name: b.clone() for name, b in network.named_buffers()}
    moments = _adam_moments(network, optimizer)
    group = optimizer.param_groups[0]
    for _ in range(steps):
        loss = loss_of({**params, **buffers})
        names = list(params)
        grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=backprop, allow_unused=True)
        new_params, new_moments = {}, {}
        for name, grad in zip(names, grads):
            if grad is None:  # no gradient: Adam leaves the tensor (and its moments) alone
                new_params[name], new_moments[name] = params[name], moments[name]
                continue
            new_params[name], new_moments[name] = adam_step(params[name], grad, moments[name], group)
        params, moments = new_params, new_moments
        if not backprop:
            params = {name: p.detach().requires_grad_() for name, p in params.items()}
            moments = {name: tuple(t.detach() if torch.is_tensor(t) else t for t in m) for name, m in moments.items()}
    return {**params, **buffers}


def _adam_moments(network: nn.Module, optimizer: torch.optim.Adam) -> dict[str, tuple]:
    """(exp_avg, exp_avg_sq, steps taken) per parameter name, copied from the optimiser (zeros before its first step)."""
    moments = {}
    for name, p in network.named_parameters():
        state = optimizer.state.get(p, {})
        if "exp_avg" in state:
            moments[name] = (state["exp_avg"].detach().clone(), state["exp_avg_sq"].detach().clone(), float(state["step"]))
        else:
            moments[name] = (torch.zeros_like(p), torch.zeros_like(p), 0.0)
    return moments


def adam_step(p: torch.Tensor, grad: torch.Tensor, moment: tuple, group: dict) -> tuple[torch.Tensor, tuple]:
    """One differentiable step of torch.optim.Adam (no weight decay, no amsgrad): (new p, new moments)."""
    exp_avg, exp_avg_sq, step = moment
    beta1, beta2 = group["betas"]
    step += 1
    exp_avg = beta1 * exp_avg + (1 - beta1) * grad
    exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * grad * grad
    bias1, bias2 = 1 - beta1**step, 1 - beta2**step
    # clamp_min: sqrt's derivative is infinite at 0 (a zero gradient entry); the clamp's is 0 there instead of NaN.
    denominator = exp_avg_sq.clamp_min(1e-30).sqrt() / math.sqrt(bias2) + group["eps"]
    return p - (float(group["lr"]) / bias1) * exp_avg / denominator, (exp_avg, exp_avg_sq, step)
