"""CleanRL's ppo_atari_lstm.py, the anchor of `brims bench train` (run as `python -c SOURCE CONFIG`).

CONFIG is JSON: game (ALE name, e.g. "breakout"), iterations, num_envs, num_steps,
num_minibatches, update_epochs, seed,
threads (0: torch's default), script (path of ppo_atari_lstm.py; "" for the one
scripts/anchors-venv.sh put in <sys.prefix>/share/brims-anchors/).

The script is CleanRL 1.2.0's (its last PyPI release), unmodified: it is written for gym 0.23.1
(reset() -> obs, step() -> 4 values). The ale-py that CleanRL pinned for it has no wheel for
this Python, so `<Game>NoFrameskip-v4` is registered here with gym over the current ale-py's
ALEInterface, as ale-py 0.7's AtariEnv did: frameskip 1, no sticky actions, the minimal action
set, RGB observations, 400,000 frames at most; CleanRL's own wrappers (stable-baselines3 1.2.0's
no-op reset, max-and-skip 4, episodic life, FIRE reset, reward clipping; gym's resize and
grayscale) do the rest. Then the script runs as `__main__` with --cuda False, no tracking, no
video, and --total-timesteps = iterations x num_envs x num_steps. It prints `SPS: N` after every
iteration (agent steps since its start, which follows its imports, env and network creation,
over the time since then). The last line printed is `BRIMS {...}` with the versions.
"""

import json
import os
import re
import sys
import time

import ale_py
import gym
import numpy as np
import torch
from gym import spaces
from gym.utils import seeding

cfg = json.loads(sys.argv[1])
if cfg["threads"] > 0:
    torch.set_num_threads(cfg["threads"])
script = cfg["script"] or os.path.join(sys.prefix, "share", "brims-anchors", "ppo_atari_lstm.py")
if not os.path.isfile(script):
    sys.exit(f"no CleanRL script at {script} (run scripts/anchors-venv.sh, or --cleanrl-script)")


class AtariEnv(gym.Env):
    """One ALE game with gym 0.23's API, as ale-py 0.7's AtariEnv for `NoFrameskip-v4` ids."""

    metadata = {"render.modes": ["rgb_array"]}

    def __init__(self, game):
        self.game = game
        self.ale = ale_py.ALEInterface()
        self.ale.setLoggerMode(ale_py.LoggerMode.Error)
        self.ale.setFloat("repeat_action_probability", 0.0)
        self.seed()
        self._actions = self.ale.getMinimalActionSet()
        self.action_space = spaces.Discrete(len(self._actions))
        height, width = self.ale.getScreenDims()
        self.observation_space = spaces.Box(0, 255, (height, width, 3), np.uint8)

    def seed(self, seed=None):
        ss = np.random.SeedSequence(seed)
        np_seed, ale_seed = ss.generate_state(n_words=2)
        self.np_random, _ = seeding.np_random(int(np_seed))
        self.ale.setInt("random_seed", int(np.int32(ale_seed)))
        self.ale.loadROM(str(ale_py.roms.get_rom_path(self.game)))
        return [seed, int(np_seed)]

    def step(self, action):
        reward = self.ale.act(self._actions[action])
        info = {
            "lives": self.ale.lives(),
            "episode_frame_number": self.ale.getEpisodeFrameNumber(),
            "frame_number": self.ale.getFrameNumber(),
        }
        return self.ale.getScreenRGB(), reward, self.ale.game_over(), info

    def reset(self, *, seed=None, return_info=False, options=None):
        if seed is not None:
            self.seed(seed)
        self.ale.reset_game()
        obs = self.ale.getScreenRGB()
        return (obs, {}) if return_info else obs

    def get_action_meanings(self):
        return [a.name for a in self._actions]

    def render(self, mode="rgb_array"):
        return self.ale.getScreenRGB()


env_id = "".join(part.capitalize() for part in cfg["game"].split("_")) + "NoFrameskip-v4"
gym.register(
    id=env_id,
    entry_point=AtariEnv,
    kwargs={"game": cfg["game"]},
    max_episode_steps=400_000,
)

steps = cfg["iterations"] * cfg["num_envs"] * cfg["num_steps"]
sys.argv = [
    script,
    "--env-id", env_id,
    "--total-timesteps", str(steps),
    "--num-envs", str(cfg["num_envs"]),
    "--num-steps", str(cfg["num_steps"]),
    "--num-minibatches", str(cfg["num_minibatches"]),
    "--update-epochs", str(cfg["update_epochs"]),
    "--seed", str(cfg["seed"]),
    "--cuda", "False",
    "--track", "False",
    "--capture-video", "False",
]  # fmt: skip
source = open(script).read()
start = time.perf_counter()
# As `python ppo_atari_lstm.py …` would run it (its __file__ names its experiment).
exec(compile(source, script, "exec"), {"__name__": "__main__", "__file__": script})
wall = time.perf_counter() - start
note = os.path.join(os.path.dirname(script), "SOURCE")
source_note = open(note).read().strip() if os.path.isfile(note) else f"{script} (origin not recorded)"
version = re.search(r"cleanrl-([0-9][0-9.]*[0-9])", source_note)
import stable_baselines3  # noqa: E402

print(
    "BRIMS "
    + json.dumps(
        {
            "name": "cleanrl ppo_atari_lstm.py",
            "version": version.group(1) if version else "unknown",
            "source": source_note,
            "torch": torch.__version__,
            "gym": gym.__version__,
            "ale_py": ale_py.__version__,
            "stable_baselines3": stable_baselines3.__version__,
            "threads": torch.get_num_threads(),
            "env_id": env_id,
            "steps": steps,
            "wall_secs_with_startup": wall,
        }
    ),
    flush=True,
)
