"""The transformers + peft side of bench/loss-curve.ts (issue 12): repeats splint's exported run.

`node --import tsx bench/loss-curve.ts --export DIR` wrote DIR/run.json (model folder, optimizer,
schedule, loss rule, the micro-batches of each step and splint's lr of each step),
DIR/initial_adapter/ (the adapter at step 0, PEFT format) and DIR/batches.safetensors (every
micro-batch splint's trainer was served). This script loads the model folder with
Mistral3ForConditionalGeneration (bf16 weights, as the tutorial loads them), attaches the initial
adapter with peft.PeftModel.from_pretrained(is_trainable=True) (f32 adapter weights: peft's
autocast_adapter_dtype), and trains the same steps the way Trainer(bf16=True) does: forward and loss
under torch.autocast(bfloat16), backward outside it, each micro-batch's mean loss divided by the
step's micro-batch count, clip_grad_norm_ on the adapter, torch AdamW, the linear warm-up schedule
stepped after each optimizer step. Gradient checkpointing is left off: it recomputes the same
forward, so it changes no number here. Writes the curve as JSON ({label, steps: [{step, loss, lr,
grad_norm}], ...}) for `bench/loss-curve.ts --compare DIR --reference FILE`.

    python3 bench/reference/hf_loss_curve.py --export DIR --out hf-loss-curve.json [--device cuda|cpu]
    python3 bench/reference/hf_loss_curve.py --export DIR --dry-run   # standard library only

--dry-run only checks that DIR holds what the run needs (files, tensor names, dtypes and shapes,
the recipe's fields) and prints a summary; it imports neither torch nor transformers. Exit status 1
when the export is incomplete or, in a run, when this side's learning rate of a step differs from
splint's (the schedules would not be the same run) or peft did not load the exported adapter.
"""
import argparse
import json
import math
import struct
import sys
import time
from pathlib import Path

FORMAT = "splint-loss-curve-export/1"
REPO = Path(__file__).resolve().parents[2]


def safetensors_header(path):
    """The tensor table of a safetensors file: name -> {dtype, shape, data_offsets}."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    header.pop("__metadata__", None)
    return header


def validate(export, model_dir):
    """(run, problems, summary) of an export folder, using the standard library only."""
    problems = []
    run_file = export / "run.json"
    if not run_file.is_file():
        return None, [f"{run_file} is missing"], ""
    run = json.loads(run_file.read_text())
    if run.get("format") != FORMAT:
        problems.append(f"run.json format is {run.get('format')!r}, expected {FORMAT!r}")
    for name in ("config.json", "model.safetensors"):
        if not (model_dir / name).is_file():
            problems.append(f"model folder {model_dir} has no {name}")

    adapter = export / run.get("adapter", "initial_adapter")
    adapter_tensors = 0
    if not (adapter / "adapter_config.json").is_file() or not (adapter / "adapter_model.safetensors").is_file():
        problems.append(f"{adapter} needs adapter_config.json and adapter_model.safetensors")
    else:
        cfg = json.loads((adapter / "adapter_config.json").read_text())
        if cfg.get("peft_type") != "LORA":
            problems.append(f"adapter peft_type is {cfg.get('peft_type')!r}, expected 'LORA'")
        if cfg.get("lora_dropout", 0) != 0 or run.get("lora_dropout", 0) != 0:
            problems.append("LoRA dropout is not 0: the two sides' dropout masks cannot match")
        header = safetensors_header(adapter / "adapter_model.safetensors")
        adapter_tensors = len(header)
        odd = sorted({t["dtype"] for t in header.values()} - {"F32"})
        if adapter_tensors == 0 or odd:
            problems.append(f"adapter_model.safetensors: {adapter_tensors} tensors, dtypes other than F32: {odd}")

    opt = run.get("optimizer", {})
    for key in ("lr", "betas", "eps", "weight_decay", "max_grad_norm"):
        if key not in opt:
            problems.append(f"run.json optimizer has no {key}")
    if opt.get("name") != "adamw_torch":
        problems.append(f"optimizer {opt.get('name')!r}: only adamw_torch is repeated here")
    sched = run.get("schedule", {})
    if sched.get("type") != "linear":
        problems.append(f"schedule {sched.get('type')!r}: only linear (get_linear_schedule_with_warmup) is repeated here")
    if not str(run.get("loss", "")).startswith("mean_per_micro"):
        problems.append(f"loss rule {run.get('loss')!r}: only mean_per_micro is repeated here")

    steps = run.get("steps", [])
    if len(steps) != sched.get("total_steps"):
        problems.append(f"{len(steps)} steps listed, schedule total_steps {sched.get('total_steps')}")
    batches = export / run.get("batches", "batches.safetensors")
    keys = sorted({k for s in steps for k in s.get("micro_batches", [])})
    if not batches.is_file():
        problems.append(f"{batches} is missing")
    else:
        header = safetensors_header(batches)
        for key in keys:
            shapes = [header.get(f"{key}.{f}", {}).get("shape") for f in ("input_ids", "attention_mask", "labels")]
            if shapes[0] is None or len(shapes[0]) != 2 or any(s != shapes[0] for s in shapes):
                problems.append(f"{key}: input_ids, attention_mask and labels must be present with one [B, T] shape, got {shapes}")
            pixels, sizes = header.get(f"{key}.pixel_values"), header.get(f"{key}.image_sizes")
            if (pixels is None) != (sizes is None):
                problems.append(f"{key}: pixel_values and image_sizes come together")
            elif pixels is not None and (pixels["dtype"] != "F32" or len(pixels["shape"]) != 4 or sizes["shape"] != [pixels["shape"][0], 2]):
                problems.append(f"{key}: pixel_values must be F32 [N, C, H, W] with image_sizes [N, 2]")
    for i, s in enumerate(steps):
        if s.get("step") != i + 1 or not s.get("micro_batches") or not isinstance(s.get("lr"), (int, float)):
            problems.append(f"steps[{i}] must be step {i + 1} with micro_batches and lr, got {s}")
            break
    summary = (f"{export}: {len(steps)} steps over {len(keys)} micro-batches ({', '.join(keys)}), {adapter_tensors} adapter tensors, "
               f"model {model_dir}, AdamW {opt}, schedule {sched}")
    return run, problems, summary


def check_adapter(params, adapter_file):
    """peft only warns when adapter keys do not match its modules (and keeps its own init), so check
    that every trainable parameter holds one of the exported tensors, bit for bit, in f32."""
    import torch
    from safetensors.torch import load_file

    odd = sorted({str(p.dtype) for p in params} - {"torch.float32"})
    if odd:
        raise SystemExit(f"adapter parameters are {odd}, expected float32 (peft's autocast_adapter_dtype)")
    saved = list(load_file(str(adapter_file)).values())
    if len(saved) != len(params):
        raise SystemExit(f"the exported adapter has {len(saved)} tensors, the peft model {len(params)} trainable parameters")
    left = list(params)
    for t in saved:
        j = next((j for j, p in enumerate(left) if p.shape == t.shape and torch.equal(p.detach().cpu(), t)), None)
        if j is None:
            raise SystemExit(f"no trainable parameter of the peft model holds an exported tensor of shape {tuple(t.shape)}: peft did not load the adapter")
        left.pop(j)


def train(run, export, model_dir, device_name, attn):
    import peft
    import torch
    import transformers
    from safetensors.torch import load_file
    from transformers import Mistral3ForConditionalGeneration, get_linear_schedule_with_warmup

    device = torch.device(device_name)
    base = Mistral3ForConditionalGeneration.from_pretrained(str(model_dir), dtype=torch.bfloat16, attn_implementation=attn)
    model = peft.PeftModel.from_pretrained(base, str(export / run["adapter"]), is_trainable=True).to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    check_adapter(params, export / run["adapter"] / "adapter_model.safetensors")

    tensors = load_file(str(export / run["batches"]))
    feeds = {}
    for key in sorted({k for s in run["steps"] for k in s["micro_batches"]}):
        feed = {f: tensors[f"{key}.{f}"].long() for f in ("input_ids", "attention_mask", "labels")}
        if f"{key}.pixel_values" in tensors:
            feed["pixel_values"] = tensors[f"{key}.pixel_values"]
            feed["image_sizes"] = tensors[f"{key}.image_sizes"].long()
        feeds[key] = {f: v.to(device) for f, v in feed.items()}

    o, s = run["optimizer"], run["schedule"]
    opt = torch.optim.AdamW(params, lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"], weight_decay=o["weight_decay"])
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=s["warmup_steps"], num_training_steps=s["total_steps"])
    clip = o["max_grad_norm"] if o["max_grad_norm"] > 0 else math.inf

    def finite(x):
        return x if math.isfinite(x) else None  # JSON has no NaN; the comparison refuses a missing loss

    steps = []
    started = time.perf_counter()
    for entry in run["steps"]:
        lr = sched.get_last_lr()[0]
        if abs(lr - entry["lr"]) > 1e-12 + 1e-9 * abs(entry["lr"]):
            raise SystemExit(f"step {entry['step']}: lr {lr} here, {entry['lr']} in splint's run: not the same schedule")
        objective = 0.0
        for key in entry["micro_batches"]:
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                out = model(**feeds[key], use_cache=False)
            loss = out.loss / len(entry["micro_batches"])
            loss.backward()
            objective += loss.item()
        norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        steps.append({"step": entry["step"], "loss": finite(objective), "lr": lr, "grad_norm": finite(norm)})
    seconds = time.perf_counter() - started
    where = f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else device.type
    return {
        "label": "transformers+peft bf16",
        "device": where,
        "settings": f"bf16 base weights, f32 adapters, torch.autocast bfloat16, {attn} attention, no gradient checkpointing",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__, "python": sys.version.split()[0]},
        "seconds": seconds,
        "steps": steps,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--export", required=True, help="the folder bench/loss-curve.ts --export wrote")
    ap.add_argument("--model", help="the model folder (default: run.json's model, relative to the repository root)")
    ap.add_argument("--out", help="where to write the curve JSON")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--attn", default="sdpa", help="attn_implementation (the tutorial's default: sdpa)")
    ap.add_argument("--dry-run", action="store_true", help="only check the export folder (standard library only)")
    args = ap.parse_args()

    export = Path(args.export)
    run_json = export / "run.json"
    if args.model:
        model_dir = Path(args.model)
    else:
        model_dir = REPO / (json.loads(run_json.read_text()).get("model", "") if run_json.is_file() else "")
    run, problems, summary = validate(export, model_dir)
    for p in problems:
        print(f"export problem: {p}", file=sys.stderr)
    if problems:
        return 1
    print(summary)
    if args.dry_run:
        return 0
    if not args.out:
        ap.error("--out is required unless --dry-run")
    result = train(run, export, model_dir, args.device, args.attn)
    Path(args.out).write_text(json.dumps(result, allow_nan=False) + "\n")
    losses = [s["loss"] for s in result["steps"]]
    print(f"{len(losses)} steps in {result['seconds']:.1f} s; loss step 1 {losses[0]}, last {losses[-1]}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
