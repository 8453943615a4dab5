"""torch SDPA (flash backend) at the shapes bench/attention-ops.ts measures, for the same GPU call.

    python3 bench/reference/sdpa_attention.py --shapes shapes.json --out rows.json [--reps 20]

Each shape runs as transformers' SDPA path runs it: bf16 q/k/v in [B, H, T, D], kv heads repeated
to the query heads (repeat_kv), causal rows with is_causal (prefill) or no mask (one new token
against the whole cache), and the vision tower's block-diagonal segments as a batch of equal images
(the same visible pairs). FLOPs are counted as bench/attention-ops.ts counts them.
"""

import argparse
import json

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.functional import scaled_dot_product_attention


def visible_pairs(sh):
    mask = sh["mask"]
    if mask["kind"] == "segments":
        return sum(length * length for length in mask["lengths"])
    return sh["b"] * sum(min(sh["s"], mask["queryOffset"] + t + 1) for t in range(sh["t"]))


def inputs(sh):
    """q, k, v as SDPA sees them, and whether the call is causal."""
    mask = sh["mask"]
    if mask["kind"] == "segments":
        lengths = mask["lengths"]
        if len(set(lengths)) != 1:
            raise ValueError(f"{sh['name']}: segments of different lengths have no dense SDPA equivalent here")
        b, t, s = len(lengths), lengths[0], lengths[0]
        causal = False
    else:
        b, t, s = sh["b"], sh["t"], sh["s"]
        if mask["queryOffset"] not in (0, s - t):
            raise ValueError(f"{sh['name']}: query offset {mask['queryOffset']} is neither prefill nor decode")
        causal = t > 1 and mask["queryOffset"] == 0
    dev = torch.device("cuda")
    q = (torch.rand(b, sh["hq"], t, sh["d"], device=dev) * 4 - 2).bfloat16().requires_grad_()
    k = (torch.rand(b, sh["hkv"], s, sh["d"], device=dev) * 4 - 2).bfloat16().requires_grad_()
    v = (torch.rand(b, sh["hkv"], s, sh["d"], device=dev) * 2 - 1).bfloat16().requires_grad_()
    return q, k, v, causal


def median_ms(fn, reps):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def measure(sh, reps):
    q, k, v, causal = inputs(sh)
    group = sh["hq"] // sh["hkv"]

    def forward():
        kk = k.repeat_interleave(group, dim=1) if group > 1 else k
        vv = v.repeat_interleave(group, dim=1) if group > 1 else v
        return scaled_dot_product_attention(q, kk, vv, is_causal=causal)

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        with torch.no_grad():
            forward_ms = median_ms(forward, reps)
        out = forward()
        dout = torch.rand_like(out) * 2 - 1
        backward_ms = median_ms(lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True), reps)
    flops = 4 * sh["d"] * sh["hq"] * visible_pairs(sh)
    return {
        "shape": sh["name"],
        "impl": "torch SDPA flash (bf16, repeat_kv)",
        "forwardMs": forward_ms,
        "backwardMs": backward_ms,
        "forwardTflops": flops / forward_ms / 1e9,
        "backwardTflops": 2.5 * flops / backward_ms / 1e9,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    with open(args.shapes) as f:
        shapes = json.load(f)
    rows = [measure(sh, args.reps) for sh in shapes]
    with open(args.out, "w") as f:
        json.dump(rows, f)
    for r in rows:
        print(f"{r['shape']}: fwd {r['forwardMs']:.3f} ms ({r['forwardTflops']:.1f} TFLOP/s), bwd {r['backwardMs']:.3f} ms ({r['backwardTflops']:.1f})")


if __name__ == "__main__":
    main()
