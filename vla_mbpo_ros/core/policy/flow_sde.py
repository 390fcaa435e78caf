"""Flow-SDE: stochastic sampling of a flow-matching policy with a tractable chunk log-prob.

Convention (as in pi0/LeRobot): x_t = t * noise + (1 - t) * actions, the network predicts the velocity
v = noise - actions, and sampling integrates from t = 1 (noise) to t = 0 (actions) on the grid
linspace(1, 0, K + 1). One step per sample is made stochastic: a Gaussian with

    mean = x0_hat * (1 - t') + x1_hat * (t' - sigma^2 * (t - t') / (2 t)),   std = sqrt(t - t') * sigma,
    x0_hat = x_t - t v,   x1_hat = x_t + (1 - t) v,   sigma_i = noise_level * sqrt(t_i / (1 - t_i)),

where t' is the next grid point. sigma is infinite at t = 1, so its denominator uses the next grid point
there (as RLinf does). All other steps are the deterministic Euler step (sigma = 0). The chunk log-prob
is the log-density of the stochastic transition, summed over the k x d action entries; the full chain
is stored so the log-prob can be recomputed under new parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

# velocity_fn(x_t (B,k,d), t (B,)) -> v (B,k,d)
VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class FlowSDEConfig:
    num_steps: int = 3  # K denoising steps during RL rollouts
    noise_level: float = 0.5  # sigma_i = noise_level * sqrt(t_i / (1 - t_i))

    def __post_init__(self) -> None:
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
        if self.noise_level <= 0.0:
            raise ValueError(f"noise_level must be > 0, got {self.noise_level}")


def time_grid(num_steps: int) -> torch.Tensor:
    """(K+1,) grid 1 -> 0 in float64 so every caller gets bitwise-identical values."""
    return torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)


def sde_sigmas(num_steps: int, noise_level: float) -> torch.Tensor:
    """(K,) noise scale of each step."""
    grid = time_grid(num_steps)
    t = grid[:-1]
    denominator_t = torch.where(t >= 1.0, grid[1], t) if num_steps > 1 else torch.full_like(t, 0.5)
    return noise_level * torch.sqrt(t / (1.0 - denominator_t))


def transition_mean_std(
    x_t: torch.Tensor, velocity: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, sigma: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of x_{t'} given x_t; t, t_next, sigma are (B,) and broadcast over the chunk."""
    shape = (-1,) + (1,) * (x_t.dim() - 1)
    t, t_next, sigma = (v.to(dtype=x_t.dtype).to(x_t.device).view(shape) for v in (t, t_next, sigma))
    delta = t - t_next
    x0_hat = x_t - t * velocity
    x1_hat = x_t + (1.0 - t) * velocity
    mean = x0_hat * (1.0 - t_next) + x1_hat * (t_next - sigma.square() * delta / (2.0 * t))
    std = torch.sqrt(delta) * sigma
    return mean, std


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Diagonal Gaussian log-density summed over all but the batch dimension."""
    std = std.expand_as(mean)
    log_density = -0.5 * ((x - mean) / std).square() - torch.log(std) - 0.5 * math.log(2.0 * math.pi)
    return log_density.flatten(1).sum(dim=1)


def sample_chain(
    velocity_fn: VelocityFn,
    noise: torch.Tensor,
    config: FlowSDEConfig,
    denoise_index: torch.Tensor | None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Integrate from ``noise`` (B,k,d); returns the chain (B,K+1,k,d).

    ``denoise_index`` (B,) picks each sample's stochastic step; ``None`` gives the deterministic ODE.
    The schedule stays on the CPU in float64; the chain lives on ``noise``'s device, and the generator may be a
    CPU one (its draws are moved).
    """
    grid = time_grid(config.num_steps)
    sigmas = sde_sigmas(config.num_steps, config.noise_level)
    batch = noise.shape[0]
    x = noise
    chain = [x]
    for i in range(config.num_steps):
        t = grid[i].expand(batch)
        t_next = grid[i + 1].expand(batch)
        velocity = velocity_fn(x, t.to(dtype=noise.dtype).to(noise.device))
        if denoise_index is None:
            stochastic = torch.zeros(batch, dtype=torch.bool)
        else:
            stochastic = denoise_index.cpu() == i
        sigma = torch.where(stochastic, sigmas[i], torch.zeros((), dtype=sigmas.dtype))
        mean, std = transition_mean_std(x, velocity, t, t_next, sigma)
        if bool(stochastic.any()):
            draw_device = generator.device if generator is not None else x.device
            eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=draw_device).to(x.device)
            x = mean + std * eps
        else:
            x = mean
        chain.append(x)
    return torch.stack(chain, dim=1)


def stochastic_transition(
    velocity_fn: VelocityFn, chain: torch.Tensor, denoise_index: torch.Tensor, config: FlowSDEConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_next, mean, std) of each stored chain's stochastic step under the current ``velocity_fn``."""
    if chain.shape[1] != config.num_steps + 1:
        raise ValueError(f"chain has {chain.shape[1]} iterates, expected K+1 = {config.num_steps + 1}")
    grid = time_grid(config.num_steps)
    sigmas = sde_sigmas(config.num_steps, config.noise_level)
    index = denoise_index.cpu()
    rows, on_device = torch.arange(chain.shape[0], device=chain.device), index.to(chain.device)
    x_t = chain[rows, on_device]
    t = grid[index]
    velocity = velocity_fn(x_t, t.to(dtype=chain.dtype).to(chain.device))
    mean, std = transition_mean_std(x_t, velocity, t, grid[index + 1], sigmas[index])
    return chain[rows, on_device + 1], mean, std


def chain_log_prob(
    velocity_fn: VelocityFn, chain: torch.Tensor, denoise_index: torch.Tensor, config: FlowSDEConfig
) -> torch.Tensor:
    """Log-prob (B,) of each stored chain's stochastic transition under the current ``velocity_fn``."""
    return gaussian_log_prob(*stochastic_transition(velocity_fn, chain, denoise_index, config))
