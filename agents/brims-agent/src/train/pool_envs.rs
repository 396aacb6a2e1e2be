//! The actor pool as the sampler's env groups: `ppo::Sampler` acts, the pool's shard threads
//! step the envs (two groups with double buffering, so one steps while the policy runs for the
//! other).

use std::ops::Range;

use actors::{ActorError, ActorPool};
use envs_api::Env;
use ppo::{EnvGroups, EpisodeEnd, GroupOutcome, ObsElement};

/// An [`ActorPool`] seen through [`EnvGroups`].
pub(crate) struct PoolEnvs<E: Env>(pub ActorPool<E>);

impl<E: Env> EnvGroups for PoolEnvs<E>
where
    E::Elem: ObsElement,
{
    type Obs = E::Elem;
    type Error = ActorError;

    fn groups(&self) -> Vec<Range<usize>> {
        (0..self.0.num_groups())
            .map(|g| self.0.group_envs(g))
            .collect()
    }

    fn reset(&mut self) -> Result<Vec<E::Elem>, ActorError> {
        self.0.reset()
    }

    fn send_actions(&mut self, group: usize, actions: &[usize]) -> Result<(), ActorError> {
        self.0.send_actions(group, actions)
    }

    fn recv(&mut self, group: usize) -> Result<GroupOutcome<E::Elem>, ActorError> {
        let step = self.0.recv(group)?;
        Ok(GroupOutcome {
            obs: step.obs,
            rewards: step.rewards,
            terminated: step.terminated,
            truncated: step.truncated,
            final_obs: step.final_obs,
            episodes: step
                .episodes
                .into_iter()
                .map(|(env, stats)| EpisodeEnd {
                    env,
                    ret: stats.ret,
                    len: stats.len,
                })
                .collect(),
        })
    }
}
