"""The reference for bench/eval-throughput.ts: greedy generation with transformers + peft.

Reads the plan `node bench/train-step.ts --size S --plan` prints, builds the random-init bf16
Mistral3ForConditionalGeneration on the GPU (hf_peft_step.build_model), attaches the tutorial's LoRA
adapter unmerged (peft.get_peft_model, as the fine-tuned model is evaluated), and runs
model.generate over --images images, two prompts a batch (552 image + 160 prompt tokens each), with
exactly --max-new-tokens new tokens (min_new_tokens = max_new_tokens: no EOS stop, the same work as
splint's run). One warm-up batch; every batch timed between device synchronisations. Prints one
JSON line per attention implementation (appended to --out).

    python3 bench/reference/hf_generate.py --plan plan.json --images 140 --attn sdpa --out results.jsonl
"""
import argparse
import gc
import json
import statistics
import sys
import time

import torch

from hf_peft_step import build_inputs, build_model

INPUT_SETS = 4


def run_one(plan, attn, images, max_new_tokens):
    import peft
    import transformers

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    t_setup = time.perf_counter()
    model = build_model(plan, attn)
    lora = plan["lora"]
    model = peft.get_peft_model(
        model,
        peft.LoraConfig(task_type=peft.TaskType.CAUSAL_LM, r=lora["r"], lora_alpha=lora["lora_alpha"], lora_dropout=0.0,
                        bias="none", target_modules=lora["target_modules"]),
    )
    model.eval()
    input_sets = [build_inputs(plan, prompt_only=True, seed=10 + i) for i in range(INPUT_SETS)]
    torch.cuda.synchronize()
    setup_seconds = time.perf_counter() - t_setup
    batch = plan["workload"]["batch"]

    def generate(i):
        inputs = input_sets[i % INPUT_SETS]
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False,
                                 use_cache=True)
        torch.cuda.synchronize()
        new = out.shape[1] - inputs["input_ids"].shape[1]
        assert new == max_new_tokens, (new, max_new_tokens)
        return (time.perf_counter() - t0) * 1000

    warmup_ms = generate(0)
    print(f"[hf generate {plan['size']} {attn}] warm-up batch: {warmup_ms:.0f} ms", file=sys.stderr, flush=True)
    batch_ms = [generate(i) for i in range(images // batch)]
    total = sum(batch_ms) / 1000
    result = {
        "bench": "eval",
        "tool": "transformers+peft",
        "size": plan["size"],
        "device": torch.cuda.get_device_name(),
        "attention": attn,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        "images": images,
        "batch": batch,
        "promptTokens": int(input_sets[0]["input_ids"].shape[1]),
        "maxNewTokens": max_new_tokens,
        "totalSeconds": total,
        "imagesPerSecond": images / total,
        "newTokensPerSecond": images * max_new_tokens / total,
        "medianBatchMs": statistics.median(batch_ms),
        "batchMs": batch_ms,
        "peakBytes": torch.cuda.max_memory_allocated(),
        "setupSeconds": setup_seconds,
    }
    del model, input_sets
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--plan", required=True)
    ap.add_argument("--images", type=int, default=140)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--attn", default="sdpa")
    ap.add_argument("--out")
    args = ap.parse_args()
    with open(args.plan) as f:
        plan = json.load(f)
    status = 0
    for attn in args.attn.split(","):
        try:
            result = run_one(plan, attn, args.images, args.max_new_tokens)
        except Exception as e:  # report and go on with the next implementation
            result = {"bench": "eval", "tool": "transformers+peft", "size": plan["size"], "attention": attn, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
            status = 1
        gc.collect()
        torch.cuda.empty_cache()
        line = json.dumps(result)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
