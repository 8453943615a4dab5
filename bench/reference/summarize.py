"""Merges the JSON lines of bench/train-step.ts (splint) and bench/reference/hf_peft_step.py
(transformers + peft) from one scripts/gpu-bench call into bench/results/<date>-<gpu>.{json,md}:
one Markdown table with both side by side and splint's speed relative to each reference, then the
per-phase profile. Sizes or runs that failed (out of memory, timeout) are listed as such.

    python3 bench/reference/summarize.py --results results.jsonl --machine machine.txt --out-dir DIR
"""
import argparse
import datetime
import json
import re

GIB = 2**30
SIZES = ["3b", "8b", "14b", "tiny"]


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                rows.append(json.loads(line))
    return rows


def label(r):
    if r["tool"] == "splint":
        weights = ", FP8 weights" if r.get("weights") == "fp8" else ""
        return f"splint (CUDA backend, {r.get('matmul', 'f32')} matmul{weights})"
    return f"transformers + peft, {r['attention']}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--machine", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--notes", default="", help="file with lines to add under the table (failures, timeouts)")
    args = ap.parse_args()
    everything = load(args.results)
    rows = [r for r in everything if r.get("bench") != "eval"]
    evals = [r for r in everything if r.get("bench") == "eval"]
    with open(args.machine) as f:
        machine = f.read().strip()
    gpu = next((r["device"] for r in everything if r.get("device")), "unknown-gpu")
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu.split(",")[0]).strip("-").lower()
    base = f"{args.out_dir}/{date}-{slug}"
    notes = open(args.notes).read().strip() if args.notes else ""

    lines = [f"# splint vs transformers + peft, {date}, {gpu.split(',')[0]}", ""]
    train = [
        "## Training step",
        "",
        "Workload: the tutorial's micro-batch — 2 examples, each one 640×640 image resized to 644×644 "
        "(552 image tokens) + 160 prompt + 8 answer tokens = 720 tokens, 1440 tokens per micro-batch "
        "(image tokens included), loss on the answer only; random bf16 weights of the Ministral 3 "
        "architecture (ministral3.md §1; vision tower 24 layers × 1024); LoRA r 16, alpha 32, dropout 0.05 on "
        "q,k,v,o,gate,up,down of the decoder and the vision tower; gradient checkpointing; one AdamW step "
        "(lr 2e-4, fp32 states) per micro-batch. Median over the measured steps after warm-up, device "
        "synchronised before each clock read. splint keeps activations in f32 and, with bf16 matmul, rounds them "
        "to bf16 where they meet the bf16 weights (f32 matmul: full f32 products); the reference "
        "runs the forward under bf16 autocast as Trainer(bf16=True) does.",
        "",
        "MFU = model FLOPs per step / step time / 989.4 TFLOP/s (dense bf16 peak of H100 SXM and H200). Model FLOPs: "
        + next((r["flopsFormula"] for r in rows if r.get("flopsFormula")), "(no splint run finished)") + ".",
        "",
        "| size | implementation | ms / micro-batch | tokens/s | peak GPU memory (GiB) | MFU | splint speed ÷ this |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    sizes = [s for s in SIZES if any(r.get("size") == s for r in rows)]
    for size in sizes:
        group = [r for r in rows if r.get("size") == size]
        splint = next((r for r in group if r["tool"] == "splint" and "medianMs" in r and r.get("weights", "bf16") == "bf16"), None)
        for r in sorted(group, key=lambda r: (r["tool"] != "splint", r.get("attention", ""), r.get("weights", "bf16") == "fp8")):
            if "error" in r:
                train.append(f"| {size} | {label(r)} | {r['error']} | | {r.get('peakBytes', 0) / GIB:.1f} | | |")
                continue
            ratio = f"{splint['tokensPerSecond'] / r['tokensPerSecond']:.3f}×" if splint else "—"
            train.append(
                f"| {size} | {label(r)} | {r['medianMs']:.0f} | {r['tokensPerSecond']:.0f} | {r['peakBytes'] / GIB:.1f} | "
                f"{100 * r['mfu']:.1f}% | {ratio} |"
            )
    train += ["", "Peak GPU memory: splint's caching allocator high-water mark of live bytes; "
              "the reference's torch.cuda.max_memory_allocated. Both include the weights.", ""]
    fp8 = [r for r in rows if r.get("weights") == "fp8" and "medianMs" in r]
    if fp8:
        train += ["FP8 weights: the decoder's 7 linears per layer in e4m3 with a per-tensor weight_scale_inv, in the "
                  "FP8 Instruct checkpoints' key layout (everything else bf16); splint widens each to bf16 in a reused "
                  "scratch block inside its matmul. On that row the last column is the BF16 row's speed ÷ the FP8 row's, "
                  "i.e. FP8 step time ÷ BF16 step time of the same call.", "",
                  "| size | weights | peak GPU memory (GiB) | planner's estimate (GiB) |", "| --- | --- | ---: | ---: |"]
        for r in [r for r in rows if r["tool"] == "splint" and "plannedPeakBytes" in r]:
            train.append(f"| {r['size']} | {r.get('weights', 'bf16')} | {r['peakBytes'] / GIB:.2f} | {r['plannedPeakBytes'] / GIB:.2f} |")
        train += [""]

    train += ["## Where the time goes (one extra step, synchronised at each phase boundary, ms)", "",
              "| size | implementation | vision tower + projector fwd | decoder fwd | head + loss fwd | backward (with recomputation) | optimizer | total |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for size in sizes:
        for r in [r for r in rows if r.get("size") == size and "phases" in r]:
            p = r["phases"]
            cells = " | ".join(f"{p.get(k, float('nan')):.0f}" for k in ["visionMs", "decoderMs", "headLossMs", "backwardMs", "optimizerMs", "totalMs"])
            train.append(f"| {size} | {label(r)} | {cells} |")
    if rows:
        lines += train
    if evals:
        lines += ["", "## Evaluation throughput (greedy generation, LoRA attached unmerged)", "",
                  "Two prompts a batch, each one 644×644 image (552 image tokens) + 160 prompt tokens, exactly "
                  "max_new_tokens new tokens per prompt (no EOS stop). Sum of per-batch times after one warm-up batch.", "",
                  "| size | implementation | images | new tokens each | seconds | images/s | new tokens/s | ms / batch (median) | peak GPU memory (GiB) | splint speed ÷ this |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for size in [s for s in SIZES if any(r.get("size") == s for r in evals)]:
            group = [r for r in evals if r.get("size") == size]
            splint = next((r for r in group if r["tool"] == "splint" and "imagesPerSecond" in r), None)
            for r in sorted(group, key=lambda r: (r["tool"] != "splint", r.get("attention", ""))):
                if "error" in r:
                    lines.append(f"| {size} | {label(r)} | {r['error']} | | | | | | | |")
                    continue
                ratio = f"{splint['imagesPerSecond'] / r['imagesPerSecond']:.3f}×" if splint else "—"
                lines.append(
                    f"| {size} | {label(r)} | {r['images']} | {r['maxNewTokens']} | {r['totalSeconds']:.1f} | {r['imagesPerSecond']:.2f} | "
                    f"{r['newTokensPerSecond']:.1f} | {r['medianBatchMs']:.0f} | {r['peakBytes'] / GIB:.1f} | {ratio} |"
                )
    lines += ["", "## Machine", "", "```", machine, "```", ""]
    if notes:
        lines += ["## Notes from the run", "", notes, ""]

    with open(f"{base}.md", "w") as f:
        f.write("\n".join(lines))
    with open(f"{base}.json", "w") as f:
        json.dump({"date": date, "gpu": gpu, "machine": machine, "results": everything, "notes": notes}, f, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
