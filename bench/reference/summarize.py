"""Merges the JSON lines of bench/train-step.ts (splint) and bench/reference/hf_peft_step.py
(transformers + peft) from one scripts/gpu-bench call into bench/results/<date>-<gpu>.{json,md}:
one Markdown table with both side by side and splint's speed relative to each reference, then the
per-phase profile, splint's op-class profile and its CUPTI timeline. Sizes or runs that failed (out
of memory, timeout) are listed as such.

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


VARIANTS = {  # hf_peft_step.py --variant: the name in the table, what it is
    "tutorial": ("tutorial", "transformers + peft as the tutorial runs it: bf16 autocast, f32 adapters, gradient checkpointing, "
                 "logits at every position, torch AdamW"),
    "tuned": ("tuned", "stock PyTorch tuned by hand on the same model, LoRA targets and loss: bf16 weights, adapters and "
              "activations, no gradient checkpointing, lm_head and loss at the answer positions only, fused AdamW (bf16 states), "
              "the vision tower's images batched through flash SDPA with no mask, no all-ones decoder mask"),
    "tuned-compile": ("tuned + regional compile", "tuned, with torch.compile on every decoder and vision layer "
                      "(compilation absorbed by the warm-up steps)"),
}
VARIANT_ORDER = list(VARIANTS)


def label(r):
    if r["tool"] == "splint":
        recompute = f", recompute {r['recompute']}" if r.get("recompute") else ""
        weights = ", FP8 weights" if r.get("weights") == "fp8" else ""
        pdl = ", programmatic launch" if r.get("programmaticLaunch") else ""
        return f"splint (CUDA backend, {r.get('matmul', 'f32')} matmul{recompute}{weights}{pdl})"
    name = f"transformers + peft, {r['attention']}"
    if "variant" in r:  # rows written before the variants have none: the tutorial's
        name += f", {VARIANTS.get(r['variant'], (r['variant'],))[0]}"
    return name


def order(r):
    variant = r.get("variant", "tutorial")
    return (r["tool"] != "splint", VARIANT_ORDER.index(variant) if variant in VARIANT_ORDER else len(VARIANT_ORDER), r.get("attention", ""),
            r.get("weights", "bf16") == "fp8")


def percent(part, whole):
    return f"{100 * part / whole:.1f}%" if whole > 0 else "—"


def timeline_sentence(t):
    """bench/step-timeline.ts timelineMarkdown's first line, from the row's timeline."""
    dropped = f" CUPTI dropped {t['droppedRecords']} records: busy and counts are low." if t["droppedRecords"] > 0 else ""
    return (f"CUPTI timeline: busy {t['busyMs']:.1f} ms of a {t['hostWallMs']:.1f} ms host wall, idle {t['idleOfWallMs']:.1f} ms = "
            f"{percent(t['idleOfWallMs'], t['hostWallMs'])} ({t['startLagMs']:.1f} ms before the first kernel; first start → last end "
            f"{t['spanMs']:.1f} ms, idle in it {t['idleInSpanMs']:.1f} ms = {percent(t['idleInSpanMs'], t['spanMs'])}); "
            f"{t['kernels']} kernels, {t['memcpys']} memcpys, {t['memsets']} memsets.{dropped}")


def cell(name):
    return name.replace("|", "\\|")


def kernel_table(kernels, total_ms, share):
    """A table of kernels by name ({name, count, totalMs}; names cut at 160 characters), then a blank line."""
    return (["| kernel | count | GPU ms | " + share + " |", "| --- | ---: | ---: | ---: |"]
            + [f"| {cell(k['name'][:160])} | {k['count']} | {k['totalMs']:.1f} | {percent(k['totalMs'], total_ms)} |" for k in kernels] + [""])


def idle_lines(idle, span_ms):
    """bench/step-timeline.ts idleMarkdown: where the timeline's idle lies (rows written before it have no "idle")."""
    def at(g):
        if g["after"] is None:
            return "before first"
        if g["before"] is None:
            return "after last"
        return percent(g["atMs"], span_ms)

    def bucket(b):
        if b["toUs"] is None:
            return f"≥ {b['fromUs']:g} µs"
        return f"< {b['toUs']:g} µs" if b["fromUs"] == 0 else f"{b['fromUs']:g}–{b['toUs']:g} µs"

    def name(n, edge):
        return cell(edge if n is None else n)

    tenths = [f"{10 * i}–{10 * (i + 1)}%" for i in range(len(idle["tenthsMs"]))]
    return [
        f"{idle['gaps']} idle gaps, {idle['idleMs']:.1f} ms in all ({idle['beforeFirstMs']:.2f} ms before the first activity, "
        f"{idle['afterLastMs']:.2f} ms after the last). Idle in each tenth of first start → last end (ms):",
        "",
        "| " + " | ".join(tenths) + " |",
        "| " + " | ".join("---:" for _ in tenths) + " |",
        "| " + " | ".join(f"{ms:.2f}" for ms in idle["tenthsMs"]) + " |",
        "",
        "| gap length | gaps | idle ms | share of idle |",
        "| --- | ---: | ---: | ---: |",
        *[f"| {bucket(b)} | {b['gaps']} | {b['idleMs']:.2f} | {percent(b['idleMs'], idle['idleMs'])} |" for b in idle["histogram"]],
        "",
        "Largest idle gaps (at: share of first start → last end):",
        "",
        "| at | µs | after | before |",
        "| ---: | ---: | --- | --- |",
        *[f"| {at(g)} | {g['lengthUs']:.1f} | {name(g['after'], '(step start)')} | {name(g['before'], '(step end)')} |" for g in idle["largest"]],
        "",
        "Idle by the activity waited for (the one each gap ended with):",
        "",
        "| waited for | gaps | idle ms | share of idle | mean µs |",
        "| --- | ---: | ---: | ---: | ---: |",
        *[f"| {name(w['name'], '(step end)')} | {w['gaps']} | {w['idleMs']:.2f} | {percent(w['idleMs'], idle['idleMs'])} | "
          f"{1000 * w['idleMs'] / w['gaps']:.1f} |" for w in idle["waitedFor"]],
    ]


def size_then_recompute(row):
    """Rows in the order of SIZES (others last), then by recomputation setting."""
    return (SIZES.index(row["size"]) if row["size"] in SIZES else 99, row.get("recompute", ""))


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
        "q,k,v,o,gate,up,down of the decoder and the vision tower; gradient checkpointing (splint's recompute full rows and the reference's tutorial variant); one AdamW step "
        "(lr 2e-4, fp32 states) per micro-batch. Median over the measured steps after warm-up, device "
        "synchronised before each clock read. splint's bf16 matmul rows are its fast tier, as autocast computes: "
        "bf16 products with f32 accumulation, the LoRA linears' outputs, norms, RoPE and SwiGLU in bf16, the residual "
        "stream, softmax statistics, loss, gradients of the adapters and optimizer in f32 (f32 matmul: the exact tier); the reference's "
        "tutorial variant runs the forward under bf16 autocast as Trainer(bf16=True) does (the other variants: below the table).",
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
        # the fastest splint row of the size (several with GPU_BENCH_RECOMPUTE)
        splint = max((r for r in group if r["tool"] == "splint" and "medianMs" in r), key=lambda r: r["tokensPerSecond"], default=None)
        for r in sorted(group, key=order):
            if "error" in r:
                train.append(f"| {size} | {label(r)} | {r['error']} | | {r.get('peakBytes', 0) / GIB:.1f} | | |")
                continue
            ratio = f"{splint['tokensPerSecond'] / r['tokensPerSecond']:.3f}×" if splint else "—"
            train.append(
                f"| {size} | {label(r)} | {r['medianMs']:.0f} | {r['tokensPerSecond']:.0f} | {r['peakBytes'] / GIB:.1f} | "
                f"{100 * r['mfu']:.1f}% | {ratio} |"
            )
    train += ["", "splint speed ÷ this: the size's fastest splint row against each row. "
              "Peak GPU memory: splint's caching allocator high-water mark of live bytes; "
              "the reference's torch.cuda.max_memory_allocated. Both include the weights.", ""]
    present = [v for v in VARIANT_ORDER if any(r.get("variant") == v for r in rows)]
    if present:
        train += ["Reference variants (bench/reference/hf_peft_step.py --variant): "
                  + "; ".join(f"**{VARIANTS[v][0]}**: {VARIANTS[v][1]}" for v in present)
                  + ". MFU uses the same model FLOP count for every row (recomputation included), so it stays proportional to speed.", ""]
    for size in sizes:
        group = [r for r in rows if r.get("size") == size and "medianMs" in r]
        splint = max((r for r in group if r["tool"] == "splint"), key=lambda r: r["tokensPerSecond"], default=None)
        refs = [r for r in group if r["tool"] != "splint"]
        if refs:
            best = max(refs, key=lambda r: r["tokensPerSecond"])
            ratio = f"{label(splint)} ÷ this {splint['tokensPerSecond'] / best['tokensPerSecond']:.3f}×" if splint else "no splint row"
            train.append(f"- {size}: strongest reference {label(best)}, {best['medianMs']:.0f} ms ({ratio}).")
        for r in group:
            if "compileSeconds" in r:
                train.append(f"- {size}: {label(r)}: compilation ≈ {r['compileSeconds']:.0f} s over {r['warmupSteps']} warm-up steps "
                             f"({', '.join(f'{ms:.0f}' for ms in r.get('warmupStepMs', []))} ms), setup {r['setupSeconds']:.0f} s.")
    if any(r.get("variant") for r in rows):
        train.append("")
    fp8 = [r for r in rows if r.get("weights") == "fp8" and "medianMs" in r]
    if fp8:
        if train[-1] != "":
            train.append("")
        train += ["FP8 weights: the decoder's 7 linears per layer in e4m3 with a per-tensor weight_scale_inv, in the "
                  "FP8 Instruct checkpoints' key layout (everything else bf16); splint widens each to bf16 in a scratch "
                  "block inside its matmul, one weight at a time.", ""]
        for r in fp8:
            same = [b for b in rows if b["tool"] == "splint" and b.get("size") == r["size"] and "medianMs" in b
                    and b.get("weights", "bf16") == "bf16" and b.get("recompute") == r.get("recompute")]
            if same:
                train.append(f"- {r['size']}: FP8 step time ÷ BF16 step time (recompute {r.get('recompute', '?')}, same call): "
                             f"{r['medianMs'] / same[0]['medianMs']:.3f}× ({r['medianMs']:.0f} vs {same[0]['medianMs']:.0f} ms); "
                             f"peak {r['peakBytes'] / GIB:.2f} vs {same[0]['peakBytes'] / GIB:.2f} GiB.")
        train += ["", "| size | implementation | peak GPU memory (GiB) | memory planner's estimate (GiB) |", "| --- | --- | ---: | ---: |"]
        for r in [r for r in rows if r["tool"] == "splint" and "plannedPeakBytes" in r]:
            train.append(f"| {r['size']} | {label(r)} | {r['peakBytes'] / GIB:.2f} | {r['plannedPeakBytes'] / GIB:.2f} |")
        train += [""]

    train += ["## Where the time goes (one extra step, synchronised at each phase boundary, ms)", "",
              "| size | implementation | vision tower + projector fwd | decoder fwd | head + loss fwd | backward (with recomputation where checkpointed) | optimizer | total |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for size in sizes:
        for r in sorted([r for r in rows if r.get("size") == size and "phases" in r], key=order):
            p = r["phases"]
            cells = " | ".join(f"{p.get(k, float('nan')):.0f}" for k in ["visionMs", "decoderMs", "headLossMs", "backwardMs", "optimizerMs", "totalMs"])
            train.append(f"| {size} | {label(r)} | {cells} |")
    profiled = [r for r in rows if r.get("tool") == "splint" and r.get("profile")]
    if profiled:
        train += ["", "## splint's step by op class (CUDA events around every backend call, no synchronisation inside the step)", "",
                  "GPU ms: time inside the calls of that class in stream order; idle: gaps between calls, when the GPU waited "
                  "for the host. Launches count kernels, cuBLASLt products, device copies and memsets; syncs count host waits "
                  "on the stream inside the step.", ""]
        for r in sorted(profiled, key=size_then_recompute):
            p = r["profile"]
            train += [f"**{r['size']}, {label(r)}**: GPU span {p['spanMs']:.1f} ms (busy {p['gpuBusyMs']:.1f}, idle {p['gpuIdleMs']:.1f} = "
                      f"{100 * p['gpuIdleMs'] / p['spanMs']:.1f}%), host wall {p['wallMs']:.1f} ms; {p['backendCalls']} backend calls, "
                      f"{p['launches']} launches ({p['launchesPerLayer']:.0f} per layer), {p['syncs']} host syncs, {p['uploads']} uploads.", "",
                      "| op class | calls | GPU ms | share of span |", "| --- | ---: | ---: | ---: |"]
            for c in p["classes"]:
                train.append(f"| {c['opClass']} | {c['calls']} | {c['gpuMs']:.1f} | {100 * c['gpuMs'] / p['spanMs']:.1f}% |")
            attention = sum(c["gpuMs"] for c in p["classes"] if c["opClass"].startswith("attention"))
            train += ["", f"Attention (forward, recomputation and backward): {attention:.1f} ms.", ""]
    splint_rows = [r for r in rows if r.get("tool") == "splint" and "timeline" in r]
    if splint_rows:
        train += ["", "## splint's step on CUPTI's activity timeline (one more step, nothing added to the stream)", "",
                  "Busy: the union of the device intervals of every kernel, memcpy and memset. Idle of the host wall: from the host's "
                  "clock before the step to after the synchronisation that ends it, less busy, so the lag before the first kernel "
                  "counts. The event profile's idle is larger: its events sit on the stream between the kernels.", ""]
        for r in sorted(splint_rows, key=size_then_recompute):
            t = r["timeline"]
            if t is None:
                train += [f"**{r['size']}, {label(r)}**: no timeline (CUPTI unavailable; its reason is in log.txt).", ""]
                continue
            train += [f"**{r['size']}, {label(r)}**: {timeline_sentence(t)}", "",
                      *kernel_table(t["topKernels"][:10], t["busyMs"], "share of busy")]
            if t.get("idle"):
                train += idle_lines(t["idle"], t["spanMs"]) + [""]
    profiled = [r for r in rows if r.get("kernelProfile")]
    if profiled:
        train += ["", "## The reference's step by kernel (torch.profiler, one more step)", "",
                  "Every CUDA kernel, copy and memset of one step by name (hf_peft_step.py --kernels), beside splint's CUPTI "
                  "timeline above: both come from CUPTI's activity records. Sum: the durations added up (kernels that overlap "
                  "each count in full).", ""]
        for r in sorted(profiled, key=size_then_recompute):
            kp = r["kernelProfile"]
            if "error" in kp:
                train += [f"**{r['size']}, {label(r)}**: no kernel profile ({kp['error']}).", ""]
                continue
            train += [f"**{r['size']}, {label(r)}**: {kp['activities']} activities, {kp['sumMs']:.1f} ms summed.", "",
                      *kernel_table(kp["top"][:25], kp["sumMs"], "share of the sum")]
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
