"""Python half of the PEFT interoperability check (issue 4): does peft load splint's adapter and give
splint's logits?

scripts/peft-interop.ts wrote DIR/adapter (PEFT format, saved by splint after a few training steps)
and DIR/splint-logits.safetensors (splint's logits with and without the adapter). This script loads
the same model folder with transformers' Mistral3ForConditionalGeneration in float32 (eager
attention, as the fixtures), attaches the adapter with peft.PeftModel.from_pretrained, runs the same
inputs, and compares logits where attention_mask == 1.

    python3 scripts/peft-interop.py --model test/fixtures/models/tiny \
        --inputs test/fixtures/forward/inputs/images_multi.safetensors --dir DIR --md OUT.md

Exit status 0 when the adapter's logits agree within --tol (max abs), 1 otherwise.
"""
import argparse
import datetime
import json
import sys

import torch
from safetensors.torch import load_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="test/fixtures/models/tiny")
    ap.add_argument("--inputs", default="test/fixtures/forward/inputs/images_multi.safetensors")
    ap.add_argument("--dir", required=True)
    ap.add_argument("--md", required=True)
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()

    import peft
    from peft.tuners.lora import LoraLayer
    import transformers
    from transformers import Mistral3ForConditionalGeneration

    torch.manual_seed(0)
    inputs = load_file(args.inputs)
    splint = load_file(f"{args.dir}/splint-logits.safetensors")
    feed = {k: inputs[k] for k in ("input_ids", "attention_mask", "pixel_values", "image_sizes") if k in inputs}
    keep = inputs["attention_mask"].bool()

    base = Mistral3ForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        base_logits = base(**feed).logits.float()
    model = peft.PeftModel.from_pretrained(base, f"{args.dir}/adapter").eval()
    lora_layers = sum(1 for _, m in model.named_modules() if isinstance(m, LoraLayer))
    with torch.no_grad():
        logits = model(**feed).logits.float()

    def max_abs(a, b):
        return (a[keep] - b[keep]).abs().max().item()

    diff = max_abs(logits, splint["logits"])
    base_diff = max_abs(base_logits, splint["base_logits"])
    effect = max_abs(logits, base_logits)
    scale = logits[keep].abs().max().item()
    ok = diff <= args.tol and effect > 100 * max(diff, 1e-7)
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "model": args.model,
        "inputs": args.inputs,
        "lora_layers_loaded": lora_layers,
        "max_abs_diff_adapter_logits": diff,
        "max_abs_diff_base_logits": base_diff,
        "adapter_effect_max_abs": effect,
        "max_abs_logit": scale,
        "tolerance": args.tol,
        "pass": ok,
    }
    print(json.dumps(result))
    lines = [
        "# PEFT interoperability: Python peft loads splint's adapter",
        "",
        f"{result['date']}; torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}; "
        "written by `scripts/gpu-bench` (`scripts/peft-interop.ts` then `scripts/peft-interop.py`).",
        "",
        f"splint (CPU backend) attached a fresh LoRA adapter to `{args.model}` (r 16, alpha 32, dropout 0.05 on "
        "q,k,v,o,gate,up,down, decoder and vision tower), trained it for a few AdamW steps so lora_B is not zero, "
        "and saved it with `saveAdapter`. transformers' `Mistral3ForConditionalGeneration` (float32, eager "
        f"attention) + `peft.PeftModel.from_pretrained` loaded it ({lora_layers} LoRA layers) and ran `{args.inputs}`; "
        "logits compared where attention_mask = 1.",
        "",
        "| quantity | value |",
        "| --- | --- |",
        f"| max abs diff, logits with the adapter (splint vs peft) | {diff:.3g} |",
        f"| max abs diff, base logits (splint vs transformers) | {base_diff:.3g} |",
        f"| adapter's effect on the logits (max abs, peft with vs without) | {effect:.3g} |",
        f"| largest logit magnitude | {scale:.3g} |",
        f"| tolerance (max abs) | {args.tol:g} |",
        f"| result | {'PASS' if ok else 'FAIL'} |",
        "",
    ]
    with open(args.md, "w") as f:
        f.write("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
