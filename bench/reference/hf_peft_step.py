"""The reference for bench/train-step.ts: the same LoRA training step with transformers + peft.

Reads the plan `node bench/train-step.ts --size S --plan` prints (config.json of the size, the
workload, LoRA and AdamW settings, the FLOP count), builds a random-init bf16
Mistral3ForConditionalGeneration directly on the GPU, wraps it with peft's LoRA (the tutorial's
LoraConfig), turns on gradient checkpointing (use_reentrant False) and runs the tutorial's
micro-batch: forward under bf16 autocast (what Trainer's bf16=True does), loss on the answer tokens,
backward, torch AdamW step. Prints one JSON line per attention implementation (and appends it to
--out): median ms per micro-batch after the warm-up (device synchronised before each clock read),
tokens/s, torch.cuda.max_memory_allocated, MFU from the plan's FLOP count, and one profiled step
(synchronised at the vision+projector / decoder / head+loss / backward / optimizer boundaries).

    python3 bench/reference/hf_peft_step.py --plan plan.json --attn sdpa,eager --out results.jsonl
"""
import argparse
import gc
import json
import statistics
import sys
import time
import traceback

import torch


def build_model(plan, attn):
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    config = Mistral3Config.from_dict(plan["config"])
    config.use_cache = False
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # parameters are created in bf16, never as an f32 copy first
    try:
        with torch.device("cuda"):
            try:
                model = Mistral3ForConditionalGeneration._from_config(config, attn_implementation=attn, dtype=torch.bfloat16)
            except TypeError:
                model = Mistral3ForConditionalGeneration._from_config(config, attn_implementation=attn, torch_dtype=torch.bfloat16)
    finally:
        torch.set_default_dtype(previous)
    return model


def build_inputs(plan, prompt_only=False, seed=3, device="cuda", pixel_dtype=torch.bfloat16):
    """The layout bench/workload.ts builds: <s>[INST] image block prompt [/INST] answer</s>
    (without the answer and labels for generation prompts)."""
    w = plan["workload"]
    gen = torch.Generator().manual_seed(seed)
    side = w["imageSize"] // (14 * 2)
    block = []
    for r in range(side):
        block += [10] * side + [13 if r == side - 1 else 12]
    vocab = plan["config"]["text_config"]["vocab_size"]
    rows, labels = [], []
    for _ in range(w["batch"]):
        text = torch.randint(1000, vocab, (w["promptTokens"] - 3,), generator=gen).tolist()
        answer = [] if prompt_only else torch.randint(1000, vocab, (w["answerTokens"] - 1,), generator=gen).tolist() + [2]
        prompt = [1, 3] + block + text + [4]
        rows.append(prompt + answer)
        labels.append([-100] * len(prompt) + answer)
    seq_len = w["seqLen"] - (w["answerTokens"] if prompt_only else 0)
    assert len(rows[0]) == seq_len, (len(rows[0]), seq_len)
    edge = w["imageSize"]
    inputs = {
        "input_ids": torch.tensor(rows, device=device),
        "attention_mask": torch.ones(w["batch"], seq_len, dtype=torch.long, device=device),
        "pixel_values": (torch.rand(w["batch"], 3, edge, edge, generator=gen) * 4 - 2).to(device, pixel_dtype),
        "image_sizes": torch.tensor([[edge, edge]] * w["batch"], device=device),
    }
    if not prompt_only:
        inputs["labels"] = torch.tensor(labels, device=device)
    return inputs


def find_module(model, suffix):
    for name, module in model.named_modules():
        if name.endswith(suffix):
            return module
    raise RuntimeError(f"no module named *{suffix}")


def run_one(plan, attn, warmup, steps):
    import peft
    from peft.tuners.lora import LoraLayer
    import transformers

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    t_setup = time.perf_counter()
    model = build_model(plan, attn)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = plan["lora"]
    model = peft.get_peft_model(
        model,
        peft.LoraConfig(
            task_type=peft.TaskType.CAUSAL_LM,
            r=lora["r"],
            lora_alpha=lora["lora_alpha"],
            lora_dropout=lora["lora_dropout"],
            bias="none",
            target_modules=lora["target_modules"],
        ),
    )
    model.train()
    opt_cfg = plan["optimizer"]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=opt_cfg["lr"], betas=(opt_cfg["beta1"], opt_cfg["beta2"]), eps=opt_cfg["eps"], weight_decay=opt_cfg["weightDecay"]
    )
    inputs = build_inputs(plan)
    torch.cuda.synchronize()
    setup_seconds = time.perf_counter() - t_setup
    lora_pairs = sum(1 for _, m in model.named_modules() if isinstance(m, LoraLayer))
    vision_attn = find_module(model, "vision_tower").config._attn_implementation
    text_attn = find_module(model, "language_model").config._attn_implementation

    marks = None
    phases = {}

    def mark(name):
        if marks is not None:
            torch.cuda.synchronize()
            now = time.perf_counter()
            phases[name] = (now - marks[-1]) * 1000
            marks.append(now)

    find_module(model, "multi_modal_projector").register_forward_hook(lambda *_: mark("visionMs"))
    find_module(model, "model.language_model").register_forward_hook(lambda *_: mark("decoderMs"))

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(**inputs).loss
        mark("headLossMs")
        loss.backward()
        mark("backwardMs")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        mark("optimizerMs")
        return loss.detach()

    times, losses = [], []
    for i in range(warmup + steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = step()
        torch.cuda.synchronize()
        ms = (time.perf_counter() - t0) * 1000
        losses.append(loss.item())
        if i >= warmup:
            times.append(ms)
        print(f"[hf {plan['size']} {attn}] step {i + 1}{' (warm-up)' if i < warmup else ''}: {ms:.1f} ms, loss {losses[-1]:.4f}", file=sys.stderr, flush=True)

    torch.cuda.synchronize()
    marks = [time.perf_counter()]
    step()
    phases["totalMs"] = (marks[-1] - marks[0]) * 1000
    marks = None

    median_ms = statistics.median(times)
    tokens = plan["workload"]["tokensPerStep"]
    result = {
        "tool": "transformers+peft",
        "size": plan["size"],
        "device": torch.cuda.get_device_name(),
        "attention": attn,
        "attentionUsed": {"vision": vision_attn, "text": text_attn},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        "workload": plan["workload"],
        "warmupSteps": warmup,
        "stepMs": times,
        "medianMs": median_ms,
        "tokensPerSecond": tokens / (median_ms / 1000),
        "peakBytes": torch.cuda.max_memory_allocated(),
        "reservedBytes": torch.cuda.max_memory_reserved(),
        "loraPairs": lora_pairs,
        "loraParams": sum(p.numel() for p in params),
        "flopsPerStep": plan["flopsPerStep"],
        "mfu": plan["flopsPerStep"] / (median_ms / 1000) / plan["peakFlops"],
        "peakFlops": plan["peakFlops"],
        "losses": losses,
        "phases": phases,
        "setupSeconds": setup_seconds,
    }
    del model, optimizer, params, inputs
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--plan", required=True)
    ap.add_argument("--attn", default="sdpa,eager")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--out")
    args = ap.parse_args()
    with open(args.plan) as f:
        plan = json.load(f)
    status = 0
    for attn in args.attn.split(","):
        try:
            result = run_one(plan, attn, args.warmup, args.steps)
        except torch.cuda.OutOfMemoryError as e:
            result = {"tool": "transformers+peft", "size": plan["size"], "attention": attn, "error": f"out of memory: {str(e).splitlines()[0]}",
                      "peakBytes": torch.cuda.max_memory_allocated()}
            status = 1
        except Exception as e:  # report and go on with the next implementation
            traceback.print_exc()
            result = {"tool": "transformers+peft", "size": plan["size"], "attention": attn, "error": f"{type(e).__name__}: {e}"}
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
