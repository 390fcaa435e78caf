"""A 2-D point-reaching world rendered into small images: the "easy setting" for testing the RL machinery
without MuJoCo or a learned world model.

The point (state = its (x, y) in [-1, 1]^2) follows absolute position targets with a per-step speed limit.
Views: "head" shows the whole square (green goal, red point); "wrist" is the head image re-centred on the
point (a camera riding on it). ``step`` is a stateless world model: it decodes the point position from the
head view, so it fits the ``WorldModel`` protocol exactly like a learned model would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vla_mbpo_ros.core.data.episode import Episode


@dataclass
class PointReachConfig:
    image_size: int = 32
    goal: tuple[float, float] = (0.5, 0.5)
    goal_radius: float = 0.25  # success when the point ends a chunk within this distance of the goal
    max_step: float = 0.1  # max displacement per action per axis
    chunk_size: int = 5
    instruction: str = "move the red dot to the green target"

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {self.image_size}")
        if self.goal_radius <= 0 or self.max_step <= 0:
            raise ValueError("goal_radius and max_step must be > 0")


class PointReachWorld:
    view_names = ("head", "wrist")
    state_dim = 2
    action_dim = 2

    def __init__(self, config: PointReachConfig | None = None) -> None:
        self.config = config or PointReachConfig()
        self.goal = np.asarray(self.config.goal, dtype=np.float32)

    def _pixels(self, positions: np.ndarray) -> np.ndarray:
        size = self.config.image_size
        return np.clip(np.round((positions + 1.0) / 2.0 * (size - 1)), 0, size - 1).astype(np.int64)

    def render(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        """positions (B,2) -> views name -> (B,S,S,3) uint8."""
        positions = np.asarray(positions, dtype=np.float32).reshape(-1, 2)
        size = self.config.image_size
        head = np.zeros((len(positions), size, size, 3), dtype=np.uint8)
        gx, gy = self._pixels(self.goal[None])[0]
        head[:, max(gy - 1, 0): gy + 2, max(gx - 1, 0): gx + 2, 1] = 255
        pixels = self._pixels(positions)
        for row, (px, py) in enumerate(pixels):
            head[row, max(py - 1, 0): py + 2, max(px - 1, 0): px + 2] = (255, 0, 0)
        wrist = np.stack([np.roll(head[r], (size // 2 - py, size // 2 - px), axis=(0, 1))
                          for r, (px, py) in enumerate(pixels)])
        return {"head": head, "wrist": wrist}

    def decode_positions(self, head: np.ndarray) -> np.ndarray:
        """Centroid of the red pixels of each head view -> (B,2) positions."""
        size = self.config.image_size
        red = (head[..., 0] > 128) & (head[..., 1] < 128)
        ys, xs = np.mgrid[0:size, 0:size]
        count = red.sum(axis=(1, 2)).clip(min=1)
        px = (red * xs).sum(axis=(1, 2)) / count
        py = (red * ys).sum(axis=(1, 2)) / count
        return (np.stack([px, py], axis=1) / (size - 1) * 2.0 - 1.0).astype(np.float32)

    def advance(self, positions: np.ndarray, chunks: np.ndarray) -> np.ndarray:
        """Apply k absolute targets per sample with the speed limit: (B,2), (B,k,2) -> (B,2)."""
        positions = np.asarray(positions, dtype=np.float32).copy()
        step = self.config.max_step
        for j in range(chunks.shape[1]):
            positions = np.clip(positions + np.clip(chunks[:, j] - positions, -step, step), -1.0, 1.0)
        return positions

    def success(self, positions: np.ndarray) -> np.ndarray:
        return (np.linalg.norm(positions - self.goal[None], axis=1) < self.config.goal_radius).astype(np.float32)

    def step(self, views: dict[str, np.ndarray], chunks: np.ndarray,
             instructions: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        positions = self.advance(self.decode_positions(views["head"]), np.asarray(chunks, dtype=np.float32))
        return self.render(positions), self.success(positions)

    def initial_positions(self, count: int, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(-1.0, 1.0, size=(count, 2)).astype(np.float32)

    def demo_episodes(self, count: int, steps: int, rng: np.random.Generator, target_offset=(0.0, 0.0),
                      action_noise: float = 0.0, waypoints: bool = False) -> list[Episode]:
        """Scripted demos heading for goal + ``target_offset`` (a biased expert makes a weak BC policy).

        Actions are the target itself, or with ``waypoints`` the next reachable point on the way to it
        (state-dependent actions, so BC has something to learn from the observation).
        """
        target = self.goal + np.asarray(target_offset, dtype=np.float32)
        step = self.config.max_step
        episodes = []
        for position in self.initial_positions(count, rng):
            states, actions = [], []
            for _ in range(steps):
                action = position + np.clip(target - position, -step, step) if waypoints else target
                action = action + action_noise * rng.standard_normal(2).astype(np.float32)
                states.append(position.copy())
                actions.append(action.astype(np.float32))
                position = self.advance(position[None], action[None, None])[0]
            states_arr = np.stack(states)
            episodes.append(Episode(views=self.render(states_arr), states=states_arr, actions=np.stack(actions),
                                    instruction=self.config.instruction, source="demo"))
        return episodes
