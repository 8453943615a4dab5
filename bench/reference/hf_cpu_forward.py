"""The reference for bench/cpu-forward.ts: one forward of transformers' Mistral3ForConditionalGeneration
on the CPU, random-init f32 weights of the plan's config.json, the token layout of bench/workload.ts
(hf_peft_step.build_inputs), eager attention. Median wall time of --reps forwards after one warm-up;
prints one JSON line.

    python3 bench/reference/hf_cpu_forward.py --plan plan.json --reps 5 --threads 2
"""
import argparse
import json
import statistics
import time

import torch

from hf_peft_step import build_inputs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--plan", required=True)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import transformers
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    torch.set_num_threads(args.threads)
    with open(args.plan) as f:
        plan = json.load(f)
    config = Mistral3Config.from_dict(plan["config"])
    config.use_cache = False
    model = Mistral3ForConditionalGeneration._from_config(config, attn_implementation="eager", dtype=torch.float32).eval()
    inputs = build_inputs(plan, seed=7, device="cpu", pixel_dtype=torch.float32)

    def once():
        start = time.perf_counter()
        with torch.inference_mode():
            model(**inputs)
        return (time.perf_counter() - start) * 1000

    once()
    times = [once() for _ in range(args.reps)]
    tokens = inputs["input_ids"].numel()
    median_ms = statistics.median(times)
    print(json.dumps({
        "tool": "transformers", "size": plan["size"], "tokens": tokens, "medianMs": median_ms,
        "tokensPerSecond": tokens / (median_ms / 1000), "threads": args.threads,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }))


if __name__ == "__main__":
    main()
