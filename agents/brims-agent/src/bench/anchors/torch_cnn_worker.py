"""torch, the anchor of `brims bench cnn` (run by the bench as `python -c SOURCE CONFIG`).

CONFIG is JSON: batch, threads (0: torch's default). The Nature CNN (4 frames in, as the bench's
own) forward + backward on u8 frames scaled to [0, 1]. Prints `BRIMS {hello}` after one warm-up
pass, then for each line "N" on stdin times N passes and prints `BRIMS {"ms": [...],
"cpu_ms"}` (CPU time of all threads per pass). EOF on stdin ends it.
"""

import json
import sys
import time

import torch
import torch.nn as nn

cfg = json.loads(sys.argv[1])
if cfg["threads"] > 0:
    torch.set_num_threads(cfg["threads"])
net = nn.Sequential(
    nn.Conv2d(4, 32, 8, stride=4),
    nn.ReLU(),
    nn.Conv2d(32, 64, 4, stride=2),
    nn.ReLU(),
    nn.Conv2d(64, 64, 3, stride=1),
    nn.ReLU(),
    nn.Flatten(),
    nn.Linear(3136, 512),
    nn.ReLU(),
)
frames = torch.randint(0, 256, (cfg["batch"], 4, 84, 84), dtype=torch.uint8)


def reply(obj):
    print("BRIMS " + json.dumps(obj), flush=True)


def one_pass():
    start = time.perf_counter()
    net.zero_grad(set_to_none=True)
    net(frames.float() / 255.0).mean().backward()
    return (time.perf_counter() - start) * 1e3


one_pass()
reply(
    {
        "name": "torch",
        "version": torch.__version__,
        "threads": torch.get_num_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
    }
)
for line in sys.stdin:
    n = max(int(line), 1)
    cpu = time.process_time()
    ms = [one_pass() for _ in range(n)]
    reply({"ms": ms, "cpu_ms": (time.process_time() - cpu) * 1e3 / n})
