"""EnvPool, the anchor of `brims bench env` (run by the bench as `python -c SOURCE CONFIG`).

CONFIG is JSON: game (ALE name, e.g. "breakout"), envs, batch, threads, seed and our pool's
Atari settings. Prints `BRIMS {hello}` once the pool has been reset and warmed up, then for each
line "SECONDS" on stdin steps the pool with random actions for that long (async: recv a batch,
send its actions) and prints `BRIMS {"steps", "secs", "cpu_secs"}`. EOF on stdin ends it.
"""

import json
import sys
import time

import envpool
import numpy as np


def reply(obj):
    print("BRIMS " + json.dumps(obj), flush=True)


cfg = json.loads(sys.argv[1])
# EnvPool's task ids are the CamelCase game names: space_invaders -> SpaceInvaders-v5.
task = "".join(part.capitalize() for part in cfg["game"].split("_")) + "-v5"
env = envpool.make(
    task,
    env_type="gymnasium",
    num_envs=cfg["envs"],
    batch_size=cfg["batch"],
    num_threads=cfg["threads"],
    seed=cfg["seed"],
    repeat_action_probability=cfg["repeat_action_probability"],
    episodic_life=cfg["episodic_life"],
    noop_max=cfg["noop_max"],
    frame_skip=cfg["frame_skip"],
    stack_num=cfg["frame_stack"],
    img_height=84,
    img_width=84,
    gray_scale=True,
    reward_clip=cfg["clip_rewards"],
    use_fire_reset=cfg["fire_reset"],
    full_action_space=cfg["full_action_space"],
    max_episode_steps=cfg["max_episode_steps"],
)
n_actions = env.action_space.n
# Random actions drawn up front, so that drawing them costs nothing in the timed loop.
rng = np.random.default_rng(cfg["seed"])
table = rng.integers(n_actions, size=(4096, cfg["batch"]), dtype=np.int32)
row = 0


def step_for(secs):
    global row
    steps = 0
    cpu = time.process_time()
    start = time.perf_counter()
    while time.perf_counter() - start < secs:
        _obs, _rew, _term, _trunc, info = env.recv()
        env_id = info["env_id"]
        env.send(table[row % len(table), : len(env_id)], env_id)
        row += 1
        steps += len(env_id)
    return steps, time.perf_counter() - start, time.process_time() - cpu


env.async_reset()
step_for(min(0.5, cfg["warm_up_secs"]))
reply(
    {
        "name": "envpool",
        "version": envpool.__version__,
        "task": task,
        "mode": "async",
        "num_envs": cfg["envs"],
        "batch_size": cfg["batch"],
        "num_threads": cfg["threads"],
        "numpy": np.__version__,
    }
)
for line in sys.stdin:
    steps, secs, cpu_secs = step_for(float(line))
    reply({"steps": steps, "secs": secs, "cpu_secs": cpu_secs})
