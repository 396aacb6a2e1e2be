//! The PPO learner: actor-critic network, rollout storage, GAE, recurrent minibatches, loss, checkpoints.
