"""services/native_caches.py: oneDNN's per-shape caches are bounded in every service process, and
that is what keeps a process that sees a new prefill length every turn from growing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from services.native_caches import CACHE_ENTRIES, VARIABLES, bound_native_caches

ROOT = Path(__file__).resolve().parents[1]

# A fresh process, so no earlier kernel has fixed the capacities: it imports services (as a
# service process does), then pushes 300 prefill lengths through SmolLM2-135M's four linear
# shapes in bfloat16 and reports its RSS (MiB) before and after.
PREFILLS = r"""
import json, os, sys, torch
import services
from services.malloc_trim import trim_heap
from tests.memory import rss_mb
torch.set_num_threads(1)
shapes = ((576, 576), (192, 576), (1536, 576), (576, 1536))
weights = [torch.randn(o, i).bfloat16() for o, i in shapes]
for w in weights:  # the first call of each shape pays one-time set-up, not per-shape caching
    torch.nn.functional.linear(torch.randn(7, w.shape[1]).bfloat16(), w)
trim_heap()
before = rss_mb()
for n in range(10, 310):
    for w in weights:
        torch.nn.functional.linear(torch.randn(n, w.shape[1]).bfloat16(), w)
trim_heap()
print(json.dumps({"before": before, "after": rss_mb(), "env": {k: os.environ.get(k) for k in sys.argv[1:]}}))
"""


def _grow(env_extra: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES} | env_extra
    out = subprocess.run(
        [sys.executable, "-c", PREFILLS, *VARIABLES],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_defaults_are_set_only_where_nothing_is():
    env = {"LRU_CACHE_CAPACITY": "7"}
    bound_native_caches(env)
    assert env == {"LRU_CACHE_CAPACITY": "7", "ONEDNN_PRIMITIVE_CACHE_CAPACITY": str(CACHE_ENTRIES)}


def test_importing_services_bounds_this_process():
    for name in VARIABLES:
        assert os.environ.get(name), name


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")
def test_new_prefill_lengths_do_not_grow_the_process():
    bounded = _grow({})
    assert bounded["env"] == {name: str(CACHE_ENTRIES) for name in VARIABLES}
    unbounded = _grow({name: "1024" for name in VARIABLES})  # oneDNN's and ideep's own default
    bounded_mb = bounded["after"] - bounded["before"]
    unbounded_mb = unbounded["after"] - unbounded["before"]
    # Measured here: +18 MiB bounded, +616 MiB with the defaults (0.5 MiB a shape).
    assert bounded_mb < 80, bounded
    assert unbounded_mb > 3 * max(bounded_mb, 20), (bounded, unbounded)
