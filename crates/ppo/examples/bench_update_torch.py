"""Times one PPO update of CleanRL's ppo_atari_lstm.py shape with torch on CPU (2 threads), for
comparison with `bench_update` (same sizes: 8 envs x 128 steps of [1, 84, 84] frames, Nature CNN,
LSTM(512, 128), 4 epochs x 4 minibatches of whole env sequences). Written for this benchmark,
following the structure of CleanRL's update (not its code).

    /work/pyenv/bin/python crates/ppo/examples/bench_update_torch.py [--threads 2] [--hidden 128]
"""
import argparse
import json
import time

import torch
from torch import nn

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
p.add_argument("--hidden", type=int, default=128)
args = p.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)

T, N, EPOCHS, MINIBATCHES, ACTIONS = 128, 8, 4, 4, 6


class Net(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.cnn = nn.Sequential(
            nn.Conv2d(1, 32, 8, 4), nn.ReLU(), nn.Conv2d(32, 64, 4, 2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, 1), nn.ReLU(), nn.Flatten(), nn.Linear(3136, 512), nn.ReLU())
        self.lstm = nn.LSTM(512, hidden)
        self.pi = nn.Linear(hidden, ACTIONS)
        self.v = nn.Linear(hidden, 1)

    def replay(self, x, state, done):
        # x: [T*B, 1, 84, 84] t-major; state: (h, c) [1, B, H]; done: [T*B]
        b = state[0].shape[1]
        feats = self.cnn(x / 255.0).reshape(-1, b, 512)
        done = done.reshape(-1, b)
        outs = []
        for f, d in zip(feats, done):
            keep = (1.0 - d).view(1, -1, 1)
            o, state = self.lstm(f.unsqueeze(0), (keep * state[0], keep * state[1]))
            outs.append(o)
        h = torch.cat(outs).flatten(0, 1)
        return self.pi(h), self.v(h).flatten()


net = Net(args.hidden)
opt = torch.optim.Adam(net.parameters(), lr=2.5e-4, eps=1e-5)
obs = torch.randint(0, 256, (T, N, 1, 84, 84), dtype=torch.uint8).float()
dones = torch.zeros(T, N)
h0 = (torch.zeros(1, N, args.hidden), torch.zeros(1, N, args.hidden))
with torch.no_grad():
    logits, values = net.replay(obs.reshape(-1, 1, 84, 84), h0, dones.reshape(-1))
    dist = torch.distributions.Categorical(logits=logits)
    actions = dist.sample()
    logprobs = dist.log_prob(actions)
advantages = torch.randn(T * N)
returns = advantages + values

start = time.perf_counter()
b_obs = obs.reshape(-1, 1, 84, 84)
flat = torch.arange(T * N).reshape(T, N)
per = N // MINIBATCHES
for epoch in range(EPOCHS):
    envs = torch.randperm(N)
    for s in range(0, N, per):
        mb_envs = envs[s:s + per]
        idx = flat[:, mb_envs].ravel()
        logits, newv = net.replay(b_obs[idx], (h0[0][:, mb_envs], h0[1][:, mb_envs]), dones.reshape(-1)[idx])
        dist = torch.distributions.Categorical(logits=logits)
        ratio = (dist.log_prob(actions[idx]) - logprobs[idx]).exp()
        adv = advantages[idx]
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        pg = torch.max(-adv * ratio, -adv * ratio.clamp(0.9, 1.1)).mean()
        vclip = values[idx] + (newv - values[idx]).clamp(-0.1, 0.1)
        vl = 0.5 * torch.max((newv - returns[idx]) ** 2, (vclip - returns[idx]) ** 2).mean()
        loss = pg - 0.01 * dist.entropy().mean() + 0.5 * vl
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 0.5)
        opt.step()
secs = time.perf_counter() - start
print(f"torch {torch.__version__}, {args.threads} threads, LSTM {args.hidden}: one update {secs:.2f} s")
print(json.dumps({"threads": args.threads, "hidden": args.hidden, "update_secs": round(secs, 3)}))
