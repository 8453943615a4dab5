"""Does transformers load what `splint merge` writes from an FP8 base, and is it the right model?
(issue 13)

`splint merge` on an FP8 checkpoint (per-tensor e4m3 decoder linears + 0-d weight_scale_inv)
dequantizes W = fp8 · weight_scale_inv, adds alpha/r · B·A and writes BF16, dropping
quantization_config. This script checks, with transformers + peft as the judge:

  1. the merged folder: config.json without quantization_config; every tensor BF16; no
     weight_scale_inv / activation_scale left;
  2. Mistral3ForConditionalGeneration.from_pretrained(merged, dtype=bfloat16) loads it with no
     missing, unexpected or mis-shaped keys, and every parameter is bf16;
  3. the merged weights equal peft's own merge (merge_and_unload) of the adapter onto the FP8 base
     loaded by transformers with FineGrainedFP8Config(dequantize=True) in float32, up to one bf16
     rounding (2^-8 relative);
  4. the merged model's logits (float32, eager attention) against that base + adapter unmerged,
     where attention_mask = 1: max abs diff ≤ --tol (the bf16 rounding of the weights is the only
     difference).

Here (node_modules installed), with the tiny fixtures:
    node bin/splint.js merge --model test/fixtures/models/tiny-fp8 --adapter test/fixtures/lora/tiny/adapter --out out/fp8-merged
then wherever torch, transformers ≥ 5 and peft are (the GPU machine, with out/fp8-merged carried):
    python3 scripts/fp8-merge-check.py --merged out/fp8-merged --md out/fp8-merge-check.md

Exit status 0 when every check passes, 1 otherwise; one JSON line on stdout, a Markdown table in --md.
"""
import argparse
import datetime
import glob
import json
import os
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--merged", required=True, help="splint merge output folder")
    ap.add_argument("--fp8-base", default="test/fixtures/models/tiny-fp8")
    ap.add_argument("--adapter", default="test/fixtures/lora/tiny/adapter")
    ap.add_argument("--inputs", default="test/fixtures/forward/inputs/images_multi.safetensors")
    ap.add_argument("--md", required=True)
    ap.add_argument("--tol", type=float, default=0.1, help="max abs logit difference")
    args = ap.parse_args()

    import peft
    import transformers
    from transformers import FineGrainedFP8Config, Mistral3ForConditionalGeneration

    checks = {}

    # 1. The files themselves.
    config = json.load(open(os.path.join(args.merged, "config.json")))
    checks["no quantization_config"] = "quantization_config" not in config
    dtypes, leftovers = set(), []
    for path in sorted(glob.glob(os.path.join(args.merged, "*.safetensors"))):
        with safe_open(path, "pt") as f:
            for key in f.keys():
                if key.endswith(("weight_scale_inv", "activation_scale")):
                    leftovers.append(key)
                dtypes.add(str(f.get_slice(key).get_dtype()))
    checks["every tensor BF16"] = dtypes == {"BF16"}
    checks["no fp8 scales left"] = not leftovers

    # 2. transformers loads it as a plain bf16 checkpoint.
    merged_bf16, info = Mistral3ForConditionalGeneration.from_pretrained(
        args.merged, dtype=torch.bfloat16, attn_implementation="eager", output_loading_info=True)
    problems = {k: list(v) for k, v in info.items() if v}
    checks["loads without missing/unexpected/mismatched keys"] = not problems
    checks["every parameter bf16"] = all(p.dtype == torch.bfloat16 for p in merged_bf16.parameters())

    # 3. peft's own merge onto transformers' exact dequantization of the FP8 base.
    def fp8_base():
        model = Mistral3ForConditionalGeneration.from_pretrained(
            args.fp8_base, dtype=torch.float32, attn_implementation="eager",
            quantization_config=FineGrainedFP8Config(dequantize=True)).eval()
        # The dequantized load leaves the checkpoint's unquantized BF16 tensors (embeddings, norms)
        # in BF16 despite dtype=float32, and the forward then mixes dtypes; everything goes to f32 in
        # place (the quantized model refuses .float()). Dequantized weights are exact in f32.
        for t in [*model.parameters(), *model.buffers()]:
            t.data = t.data.float()
        return model

    reference = peft.PeftModel.from_pretrained(fp8_base(), args.adapter).merge_and_unload()
    ref_params = dict(reference.named_parameters())
    worst_rel, exact, total = 0.0, 0, 0
    for name, p in merged_bf16.named_parameters():
        want = ref_params[name].detach().float()
        got = p.detach().float()
        worst_rel = max(worst_rel, float(((got - want).abs() / want.abs().clamp_min(1e-6)).max()))
        exact += int((p.detach() == want.to(torch.bfloat16)).sum())
        total += p.numel()
    checks["weights = bf16(peft merge_and_unload) within 2^-8"] = worst_rel <= 2**-8 + 1e-6
    exact_share = exact / total

    # 4. Logits of the merged model against the FP8 base + adapter, unmerged.
    inputs = load_file(args.inputs)
    feed = {k: inputs[k] for k in ("input_ids", "attention_mask", "pixel_values", "image_sizes") if k in inputs}
    keep = inputs["attention_mask"].bool()
    unmerged = peft.PeftModel.from_pretrained(fp8_base(), args.adapter).eval()
    merged_f32 = Mistral3ForConditionalGeneration.from_pretrained(args.merged, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        want = unmerged(**feed).logits.float()
        got = merged_f32(**feed).logits.float()
        base = fp8_base()(**feed).logits.float()
    diff = (got[keep] - want[keep]).abs().max().item()
    effect = (want[keep] - base[keep]).abs().max().item()
    checks[f"logits within {args.tol:g} of fp8 base + adapter"] = diff <= args.tol
    checks["the adapter changes the logits (effect > 10 × diff)"] = effect > 10 * max(diff, 1e-7)

    ok = all(checks.values())
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
        "merged": args.merged, "fp8_base": args.fp8_base, "adapter": args.adapter,
        "checks": checks, "loading_problems": problems, "leftover_keys": leftovers[:10], "dtypes": sorted(dtypes),
        "weights_worst_rel": worst_rel, "weights_exact_share": exact_share,
        "logits_max_abs_diff": diff, "adapter_effect_max_abs": effect, "pass": ok,
    }
    print(json.dumps(result))
    lines = [
        "# FP8 base → splint merge → transformers", "",
        f"{result['date']}; torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}; "
        "`scripts/fp8-merge-check.py`.", "",
        f"`splint merge` wrote `{args.merged}` from the FP8 base `{args.fp8_base}` and `{args.adapter}`. The reference is "
        "transformers' FP8 load with `FineGrainedFP8Config(dequantize=True)` in float32 (W = fp8 · weight_scale_inv) and peft.", "",
        "| check | result |", "| --- | --- |",
        *[f"| {name} | {'PASS' if passed else 'FAIL'} |" for name, passed in checks.items()],
        "", "| quantity | value |", "| --- | --- |",
        f"| worst relative difference of a merged weight to bf16(peft merge) target | {worst_rel:.3g} |",
        f"| share of merged weights bit-equal to bf16(peft merge) | {exact_share:.4f} |",
        f"| max abs logit diff, merged vs fp8 base + adapter | {diff:.3g} |",
        f"| adapter's effect on the logits (max abs) | {effect:.3g} |",
        f"| result | {'PASS' if ok else 'FAIL'} |", "",
    ]
    with open(args.md, "w") as f:
        f.write("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
