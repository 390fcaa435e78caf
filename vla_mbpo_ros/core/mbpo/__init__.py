"""VLA-MBPO: world-model interface, start states, branched rollouts, chunk-level GAE, Flow-SDE PPO, outer loop."""
