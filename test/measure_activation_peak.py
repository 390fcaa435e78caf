"""Measured peak of one training step of a toy Llama on the CPU, for test_memory_plan.py.

    MALLOC_MMAP_THRESHOLD_=65536 python test/measure_activation_peak.py CHECKPOINTING ROWS TOKENS

What is measured: the process's resident-set peak (``VmHWM``, reset through /proc/self/clear_refs) over
its resident set before the step, with glibc told to mmap every block above 64 KiB, so that a freed
tensor leaves the resident set at once and RSS follows the live tensors. Weights and gradients exist
before the step (a warm-up step ran), so the delta is activations + backward temporaries. Prints JSON.
"""

import gc
import json
import sys

import torch
from transformers import LlamaConfig, LlamaModel

torch.set_num_threads(1)
ckpt = sys.argv[1] == "1"
rows, tokens = int(sys.argv[2]), int(sys.argv[3])
cfg = LlamaConfig(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=64, vocab_size=16, attn_implementation="sdpa")
torch.manual_seed(0)
model = LlamaModel(cfg).train()
if ckpt:
    model.gradient_checkpointing_enable()
x = torch.randn(rows, tokens, 256)


def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024


def step():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(inputs_embeds=x, use_cache=False).last_hidden_state
    return out.float().pow(2).mean()


step().backward()  # grads allocated
gc.collect()
base = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")
loss = step()
fwd = status("VmHWM") - base
loss.backward()
total = status("VmHWM") - base
print(json.dumps({"forward_kept": fwd, "backward_peak": total}))
