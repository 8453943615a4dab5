"""The reference for bench/train-step.ts: the same LoRA training step with transformers + peft.

Reads the plan `node bench/train-step.ts --size S --plan` prints (config.json of the size, the
workload, LoRA and AdamW settings, the FLOP count), builds a random-init bf16
Mistral3ForConditionalGeneration directly on the GPU, wraps it with peft's LoRA (the tutorial's
LoraConfig: the same targets on the decoder and the vision tower) and times one micro-batch
(forward, loss on the answer tokens, backward, one AdamW step) in up to three variants (--variant):

  tutorial       as the tutorial runs it: gradient checkpointing (use_reentrant False), forward
                 under bf16 autocast (what Trainer's bf16=True does), f32 adapters (peft's default
                 autocast_adapter_dtype), logits at every position, torch AdamW (foreach); one row per
                 attention implementation of --attn.
  tuned          stock PyTorch tuned by hand on the same workload, LoRA targets and loss: bf16 model
                 and bf16 adapters (autocast_adapter_dtype=False, no autocast: every activation bf16,
                 the norms' statistics, softmax and the loss f32 as the modules compute them), no
                 gradient checkpointing, the text model run to its last hidden states and lm_head +
                 cross-entropy applied only at the positions whose shifted label is not -100, fused
                 AdamW, no all-ones attention mask (no padding: the decoder's SDPA runs is_causal,
                 mask None), and the vision tower run as one batch of the equal-size images with no
                 mask, so each image's patches attend through the flash SDPA kernel (enforced with
                 torch.nn.attention.sdpa_kernel(FLASH_ATTENTION)) instead of transformers' dense
                 block-diagonal mask over all images' patches (which rules flash out).
  tuned-compile  tuned plus regional torch.compile: every decoder layer and every vision layer
                 `module.compile()` (whole-model compile did not finish in 240 s); at least 3
                 warm-up steps absorb the compilation, reported as compileSeconds.

The batched vision path reuses the vision tower's own modules (patch_conv, ln_pre, the layers with
their LoRA) and the (cos, sin) RoPE pair that transformers' forward hands the layers for one image
of the workload's size (captured once). Before timing, tuned and tuned-compile run one checked
forward (eval mode, no grad, nothing compiled yet) through a wrapper around
torch.nn.functional.scaled_dot_product_attention that records every call, and fail unless each
vision layer's attention ran once, on the whole batch of images, with no mask (sdpaCheck); the
batched vision features are compared with transformers' own vision forward (block mask) on the
same weights and pixels (visionCheck), and the answer-only logits and loss with transformers' own
full-logits loss (lossCheck).

Prints one JSON line per row (and appends it to --out): "variant", median ms per micro-batch
after the warm-up (device synchronised before each clock read), tokens/s,
torch.cuda.max_memory_allocated, MFU from the plan's FLOP count, losses, versions and one profiled
step (synchronised at the vision+projector / decoder / head+loss / backward / optimizer
boundaries). A variant that fails prints a row with "error" and the next one runs.

    python3 bench/reference/hf_peft_step.py --plan plan.json --variant tutorial,tuned,tuned-compile --attn sdpa,eager --out results.jsonl
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


def timed_steps(step, warmup, steps, tag):
    """Runs warmup + steps steps, the device synchronised before each clock read; returns the
    measured and warm-up step times (ms) and every step's loss."""
    times, warm, losses = [], [], []
    for i in range(warmup + steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = step()
        torch.cuda.synchronize()
        ms = (time.perf_counter() - t0) * 1000
        losses.append(loss.item())
        (times if i >= warmup else warm).append(ms)
        print(f"{tag} step {i + 1}{' (warm-up)' if i < warmup else ''}: {ms:.1f} ms, loss {losses[-1]:.4f}", file=sys.stderr, flush=True)
    return times, warm, losses


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

    times, _, losses = timed_steps(step, warmup, steps, f"[hf {plan['size']} {attn}]")

    torch.cuda.synchronize()
    marks = [time.perf_counter()]
    step()
    phases["totalMs"] = (marks[-1] - marks[0]) * 1000
    marks = None

    median_ms = statistics.median(times)
    tokens = plan["workload"]["tokensPerStep"]
    result = {
        "tool": "transformers+peft",
        "variant": "tutorial",
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


VARIANTS = ("tutorial", "tuned", "tuned-compile")


class VariantError(RuntimeError):
    """Something a tuned variant relies on does not hold (a transformers internal moved, or a check
    failed): the variant stops with this message instead of timing something else."""


class SdpaRecorder:
    """While entered, torch.nn.functional.scaled_dot_product_attention is replaced by a wrapper that
    records every call (where: "vision" while the batched vision forward runs, else "text"; the
    query's shape; whether a mask was passed; is_causal). transformers' sdpa_attention_forward looks
    the function up on torch.nn.functional at every call, so the wrapper sees its calls; if that ever
    changed, the counts come out 0 and the check fails."""

    def __init__(self):
        self.calls = []
        self.where = "text"
        self._original = None

    def __enter__(self):
        import torch.nn.functional as F

        original = self._original = F.scaled_dot_product_attention

        def recording_sdpa(query, key, value, attn_mask=None, *args, **kwargs):
            is_causal = kwargs.get("is_causal", args[1] if len(args) > 1 else False)
            self.calls.append({"where": self.where, "shape": list(query.shape), "masked": attn_mask is not None,
                               "isCausal": bool(is_causal), "dtype": str(query.dtype).replace("torch.", "")})
            return original(query, key, value, attn_mask, *args, **kwargs)

        F.scaled_dot_product_attention = recording_sdpa
        return self

    def __exit__(self, *exc):
        torch.nn.functional.scaled_dot_product_attention = self._original
        return False


def vision_rope(vision_tower, layers, pixel_values, image_sizes):
    """The (cos, sin) that transformers' own vision forward hands its layers for one image of the
    workload's size, captured from a no-grad call on the first image. They depend only on the patch
    grid, so one pair serves every image of that size and every step (the stock forward rebuilds them
    each step, from position ids whose form changed across transformers versions)."""
    captured = {}

    def grab(module, args, kwargs):
        captured.setdefault("pe", kwargs.get("position_embeddings", args[2] if len(args) > 2 else None))

    handle = layers[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            type(vision_tower).forward(vision_tower, pixel_values[:1], image_sizes=image_sizes[:1])
    finally:
        handle.remove()
    pe = captured.get("pe")
    if not (isinstance(pe, (tuple, list)) and len(pe) == 2 and all(isinstance(t, torch.Tensor) for t in pe)):
        raise VariantError("PixtralVisionModel.forward no longer passes position_embeddings=(cos, sin) to its layers: the batched flash path needs updating")
    return tuple(t.detach().clone() for t in pe)


def install_batched_vision(vision_tower, inputs, box):
    """Replaces the forward of this PixtralVisionModel instance (the class and every other instance are
    left alone) by one that runs the images as a batch (images, patches, hidden) through the same
    modules (patch_conv, ln_pre, transformer.layers with their LoRA) with transformers' own 2D RoPE
    (vision_rope) and attention_mask None, under sdpa_kernel(FLASH_ATTENTION): each image's patches
    attend to their own image only, through the flash kernel. transformers' own forward concatenates
    all images into one sequence (4232 patches) with generate_block_attention_mask's dense
    block-diagonal mask, which rules the flash kernel out. The output has transformers' layout,
    (1, images·patches, hidden), patches in the same order, for the last hidden state and each hidden
    state (the input of the first layer, then every layer's output). The image sizes are read once
    here (the stock forward reads them back from the device every step). Returns the path's state
    (its calls are counted)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from transformers.modeling_outputs import BaseModelOutput

    if type(vision_tower).__name__ != "PixtralVisionModel":
        raise VariantError(f"the vision tower is {type(vision_tower).__name__}, not PixtralVisionModel: the batched flash path was written for Pixtral")
    missing = [a for a in ("patch_conv", "ln_pre", "transformer", "patch_size", "config") if not hasattr(vision_tower, a)]
    if missing:
        raise VariantError(f"PixtralVisionModel has no {missing}: transformers' Pixtral changed, the batched flash path needs updating")
    layers = getattr(vision_tower.transformer, "layers", None)
    config = vision_tower.config
    if not isinstance(layers, torch.nn.ModuleList) or len(layers) != config.num_hidden_layers:
        raise VariantError("PixtralVisionModel.transformer.layers is not the ModuleList of num_hidden_layers layers it was")
    image_sizes = [tuple(int(v) for v in size) for size in inputs["image_sizes"].tolist()]
    if len(set(image_sizes)) != 1:
        raise VariantError(f"the batched vision path needs images of one size, got {sorted(set(image_sizes))}")
    height, width = image_sizes[0]
    patch = vision_tower.patch_size
    grid_h, grid_w = height // patch, width // patch
    patches = grid_h * grid_w
    cos_sin = vision_rope(vision_tower, layers, inputs["pixel_values"], inputs["image_sizes"])
    if cos_sin[0].shape[-2] != patches or any(d != 1 for d in cos_sin[0].shape[:-2]):
        raise VariantError(f"the vision RoPE has shape {tuple(cos_sin[0].shape)}, not (patches={patches}, head_dim): it would not broadcast over the image batch")
    state = {"calls": 0, "images": len(image_sizes), "patchesPerImage": patches, "layers": len(layers)}

    def batched_forward(pixel_values, image_sizes=None, output_hidden_states=None, output_attentions=None, return_dict=None, *args, **kwargs):
        if output_attentions:
            raise VariantError("the batched vision path does not return attention weights")
        images = pixel_values.shape[0]
        if images != state["images"]:
            raise VariantError(f"the batched vision path was set up for {state['images']} images, got {images}")
        state["calls"] += 1
        recorder = box.get("recorder")
        if recorder is not None:
            recorder.where = "vision"
        try:
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                embeds = vision_tower.patch_conv(pixel_values.to(dtype=vision_tower.patch_conv.weight.dtype))
                # (images, hidden, h, w) -> (images, h·w, hidden): transformers' p.flatten(1).T per image
                embeds = embeds[..., :grid_h, :grid_w].flatten(2).transpose(1, 2).contiguous()
                hidden = vision_tower.ln_pre(embeds)
                states = [hidden]
                for layer in layers:
                    out = layer(hidden, attention_mask=None, position_embeddings=cos_sin)
                    hidden = out[0] if isinstance(out, (tuple, list)) else out
                    states.append(hidden)
        finally:
            if recorder is not None:
                recorder.where = "text"

        def flat(t):
            return t.reshape(1, images * patches, t.shape[-1])

        result = BaseModelOutput(last_hidden_state=flat(hidden), hidden_states=tuple(flat(t) for t in states) if output_hidden_states else None)
        return result.to_tuple() if return_dict is False else result

    vision_tower.forward = batched_forward
    return state


def check_vision(vision_tower, inputs, feature_layer):
    """The batched vision forward against transformers' own (block mask, whatever kernel SDPA picks for
    it) on the same weights and pixels, eval mode, no grad: the hidden states the projector reads
    (feature layer -1, the workload's, is the last hidden state; asking transformers for it that way
    installs no output-capturing hooks on the layers)."""
    last = feature_layer in (-1, len(vision_tower.transformer.layers))
    with torch.no_grad():
        ours = vision_tower(inputs["pixel_values"], image_sizes=inputs["image_sizes"], output_hidden_states=True)
        theirs = type(vision_tower).forward(vision_tower, inputs["pixel_values"], image_sizes=inputs["image_sizes"], output_hidden_states=not last)
        a = (ours.last_hidden_state if last else ours.hidden_states[feature_layer]).float()
        b = (theirs.last_hidden_state if last else theirs.hidden_states[feature_layer]).float()
        if a.shape != b.shape:
            raise VariantError(f"batched vision features {tuple(a.shape)} vs transformers' {tuple(b.shape)}")
        rel = ((a - b).norm() / b.norm().clamp_min(1e-30)).item()
        result = {"maxAbsDiff": (a - b).abs().max().item(), "relDiff": rel, "shape": list(a.shape), "featureLayer": feature_layer}
    if not rel < 0.05:
        raise VariantError(f"the batched vision features differ from transformers' by {rel:.3g} (relative norm): not the same computation")
    return result


def compile_regions(decoder_layers, vision_layers):
    """Regional torch.compile: module.compile() on every decoder and vision layer (the layers of one
    tower share one graph; the recompile limit is raised so that none falls back to eager)."""
    import torch._dynamo as dynamo

    cfg = dynamo.config
    for name, value in (("cache_size_limit", 256), ("recompile_limit", 256), ("accumulated_cache_size_limit", 2048), ("accumulated_recompile_limit", 2048)):
        try:
            if hasattr(cfg, name):
                setattr(cfg, name, max(getattr(cfg, name), value))
        except Exception:  # a renamed alias: the other name sets it
            pass
    for layer in list(decoder_layers) + list(vision_layers):
        layer.compile()


def dynamo_stats():
    try:
        from torch._dynamo.utils import counters

        return {
            "uniqueGraphs": int(counters["stats"].get("unique_graphs", 0)),
            "graphBreaks": int(sum(counters["graph_break"].values())),
            "recompiles": int(sum(v for k, v in counters["recompiles"].items())) if "recompiles" in counters else None,
        }
    except Exception as e:  # only informative
        return {"error": f"{type(e).__name__}: {e}"}


def kernel_profile(step, top):
    """One more step under torch.profiler (CUPTI, as splint's timeline): every CUDA kernel, copy and
    memset by name, the `top` largest by total device time, so the tuned rows can be compared with
    splint's timeline kernel by kernel."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    totals = {}
    for e in prof.events():
        if e.device_type != torch.autograd.DeviceType.CUDA:
            continue
        count, us = totals.get(e.name, (0, 0.0))
        totals[e.name] = (count + 1, us + e.time_range.elapsed_us())
    ranked = sorted(totals.items(), key=lambda kv: -kv[1][1])
    return {
        "activities": sum(c for c, _ in totals.values()),
        "sumMs": sum(us for _, us in totals.values()) / 1000,
        "top": [{"name": name, "count": c, "totalMs": us / 1000} for name, (c, us) in ranked[:top]],
    }


def run_tuned(plan, variant, warmup, steps, kernels=0):
    import peft
    from peft.tuners.lora import LoraLayer
    import transformers

    compiled = variant == "tuned-compile"
    if compiled:
        warmup = max(warmup, 3)
        import torch._dynamo as dynamo
        from torch._dynamo.utils import counters

        dynamo.reset()
        counters.clear()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    t_setup = time.perf_counter()
    model = build_model(plan, "sdpa")  # no gradient checkpointing
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
        autocast_adapter_dtype=False,  # adapters stay in the base weights' bf16
    )
    model.train()
    hf = model.get_base_model()
    core = getattr(hf, "model", None)
    if core is None or not hasattr(core, "vision_tower") or not hasattr(core, "language_model") or not hasattr(core, "multi_modal_projector"):
        raise VariantError(f"{type(hf).__name__}.model is not the Mistral3Model (vision_tower, multi_modal_projector, language_model) it was")
    lm_head = hf.get_output_embeddings()
    params = [p for p in model.parameters() if p.requires_grad]
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in params})
    if dtypes != ["bfloat16"]:
        raise VariantError(f"trainable parameters are {dtypes}, not bf16: autocast_adapter_dtype=False did not keep the adapters in bf16")
    if any(p.requires_grad for p in lm_head.parameters()):
        raise VariantError("lm_head is trainable: the LoRA targets changed")
    opt_cfg = plan["optimizer"]
    optimizer = torch.optim.AdamW(
        params, lr=opt_cfg["lr"], betas=(opt_cfg["beta1"], opt_cfg["beta2"]), eps=opt_cfg["eps"], weight_decay=opt_cfg["weightDecay"], fused=True
    )
    inputs = build_inputs(plan)
    box = {}
    model.eval()  # (the RoPE capture runs the stock vision forward once)
    vision = install_batched_vision(core.vision_tower, inputs, box)
    model.train()

    # The loss's positions, once: hidden state p of row b predicts label p+1 (the causal LM shift).
    labels = inputs["labels"]
    seq = labels.shape[1]
    shifted = labels[:, 1:]
    rows, cols = (shifted != -100).nonzero(as_tuple=True)
    hidden_index = rows * seq + cols
    targets = shifted[rows, cols].contiguous()
    model_inputs = {"input_ids": inputs["input_ids"], "pixel_values": inputs["pixel_values"], "image_sizes": inputs["image_sizes"]}

    marks = None
    phases = {}

    def mark(name):
        if marks is not None:
            torch.cuda.synchronize()
            now = time.perf_counter()
            phases[name] = (now - marks[-1]) * 1000
            marks.append(now)

    def answer_logits():
        out = core(**model_inputs, attention_mask=None, use_cache=False)  # no padding: the decoder runs is_causal
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return lm_head(hidden.reshape(-1, hidden.shape[-1]).index_select(0, hidden_index)).float()

    def step():
        loss = torch.nn.functional.cross_entropy(answer_logits(), targets)
        mark("headLossMs")
        loss.backward()
        mark("backwardMs")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        mark("optimizerMs")
        return loss.detach()

    torch.cuda.synchronize()
    setup_seconds = time.perf_counter() - t_setup

    # Checks, eval mode (no dropout), no grad, before anything is compiled.
    t_check = time.perf_counter()
    model.eval()
    vision_check = check_vision(core.vision_tower, inputs, hf.config.vision_feature_layer)
    with torch.no_grad():
        calls_before = vision["calls"]
        with SdpaRecorder() as recorder:
            box["recorder"] = recorder
            try:
                ours = answer_logits()
            finally:
                box.pop("recorder", None)
        vision_calls_per_forward = vision["calls"] - calls_before
        ours_loss = torch.nn.functional.cross_entropy(ours, targets).item()
        full = model(**inputs)  # transformers' own loss over full logits, same weights and (batched) vision path
        theirs = full.logits.reshape(-1, full.logits.shape[-1]).index_select(0, hidden_index).float()
        logits_rel = ((ours - theirs).norm() / theirs.norm().clamp_min(1e-30)).item()
        theirs_loss = full.loss.item()
        del full, theirs, ours
    model.train()
    vision_calls = [c for c in recorder.calls if c["where"] == "vision"]
    text_calls = [c for c in recorder.calls if c["where"] == "text"]
    if vision_calls_per_forward != 1:
        raise VariantError(f"one forward called the batched vision path {vision_calls_per_forward} times, not once: Mistral3Model no longer calls vision_tower(...)")
    if len(vision_calls) != vision["layers"]:
        raise VariantError(f"one forward made {len(vision_calls)} vision SDPA calls, not one per layer ({vision['layers']}): the vision attention did not go through torch.nn.functional.scaled_dot_product_attention")
    bad = [c for c in vision_calls if c["masked"] or c["shape"][0] != vision["images"] or c["shape"][2] != vision["patchesPerImage"]]
    if bad:
        raise VariantError(f"vision SDPA calls with a mask or not one image per batch entry: {bad[0]}")
    if not logits_rel < 0.05 or not abs(ours_loss - theirs_loss) <= 0.02 * abs(theirs_loss) + 1e-3:
        raise VariantError(f"answer-only logits/loss differ from transformers' full-logits loss: logits {logits_rel:.3g} relative, loss {ours_loss} vs {theirs_loss}")
    torch.cuda.synchronize()
    check_seconds = time.perf_counter() - t_check

    decoder_layers = core.language_model.layers
    vision_layers = core.vision_tower.transformer.layers
    if compiled:
        compile_regions(decoder_layers, vision_layers)

    core.multi_modal_projector.register_forward_hook(lambda *_: mark("visionMs"))
    core.language_model.register_forward_hook(lambda *_: mark("decoderMs"))

    tag = f"[{variant} {plan['size']}]"
    times, warm, losses = timed_steps(step, warmup, steps, tag)

    torch.cuda.synchronize()
    marks = [time.perf_counter()]
    step()
    phases["totalMs"] = (marks[-1] - marks[0]) * 1000
    marks = None
    profiled = None
    if kernels > 0:
        try:
            profiled = kernel_profile(step, kernels)
        except Exception as e:  # the profile is an extra: its failure costs only itself
            profiled = {"error": f"{type(e).__name__}: {e}"}

    median_ms = statistics.median(times)
    tokens = plan["workload"]["tokensPerStep"]
    result = {
        "tool": "transformers+peft",
        "variant": variant,
        "size": plan["size"],
        "device": torch.cuda.get_device_name(),
        "attention": "sdpa",
        "attentionUsed": {"vision": "sdpa flash (images batched, no mask)", "text": core.language_model.config._attn_implementation},
        "settings": {
            "dtype": "bf16 weights, adapters and activations, no autocast",
            "gradientCheckpointing": False,
            "logits": f"lm_head at the {hidden_index.numel()} answer positions only",
            "optimizer": "torch.optim.AdamW fused=True (bf16 params and states)",
            "regionalCompile": {"decoderLayers": len(decoder_layers), "visionLayers": len(vision_layers)} if compiled else None,
        },
        "sdpaCheck": {
            "visionCallsPerForward": len(vision_calls),
            "visionMaskedCalls": sum(c["masked"] for c in vision_calls),
            "visionQueryShape": vision_calls[0]["shape"],
            "visionDtype": vision_calls[0]["dtype"],
            "visionBackend": "FLASH_ATTENTION only (torch.nn.attention.sdpa_kernel around the vision forward)",
            "textCallsPerForward": len(text_calls),
            "textMaskedCalls": sum(c["masked"] for c in text_calls),
            "textCausalCalls": sum(c["isCausal"] for c in text_calls),
        },
        "visionCheck": vision_check,
        "lossCheck": {"answerOnly": ours_loss, "transformersFullLogits": theirs_loss, "logitsRelDiff": logits_rel},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        "workload": plan["workload"],
        "warmupSteps": warmup,
        "warmupStepMs": warm,
        "stepMs": times,
        "medianMs": median_ms,
        "tokensPerSecond": tokens / (median_ms / 1000),
        "peakBytes": torch.cuda.max_memory_allocated(),
        "reservedBytes": torch.cuda.max_memory_reserved(),
        "loraPairs": sum(1 for _, m in model.named_modules() if isinstance(m, LoraLayer)),
        "loraParams": sum(p.numel() for p in params),
        "adapterDtype": dtypes[0],
        "flopsPerStep": plan["flopsPerStep"],
        "mfu": plan["flopsPerStep"] / (median_ms / 1000) / plan["peakFlops"],
        "peakFlops": plan["peakFlops"],
        "losses": losses,
        "phases": phases,
        "setupSeconds": setup_seconds,
        "checkSeconds": check_seconds,
    }
    if profiled is not None:
        result["kernelProfile"] = profiled
    if compiled:
        # What the warm-up steps took beyond a measured step: the compilation (forward and backward graphs).
        result["compileSeconds"] = sum(max(0.0, w - median_ms) for w in warm) / 1000
        result["dynamo"] = dynamo_stats()
    del model, optimizer, params, inputs
    return result


def error_row(plan, variant, attn, e):
    row = {"tool": "transformers+peft", "variant": variant, "size": plan["size"], "attention": attn}
    if isinstance(e, torch.cuda.OutOfMemoryError):
        row["error"] = f"out of memory: {str(e).splitlines()[0]}"
        row["peakBytes"] = torch.cuda.max_memory_allocated()
    else:
        row["error"] = f"{type(e).__name__}: {e}"
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--plan", required=True)
    ap.add_argument("--variant", default="tutorial", help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--attn", default="sdpa,eager", help="the tutorial variant's attention implementations (the tuned ones use sdpa)")
    ap.add_argument("--warmup", type=int, default=2, help="warm-up steps (tuned-compile: at least 3)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--out")
    ap.add_argument("--kernels", type=int, default=0, help="the tuned variants: one more step under torch.profiler, its N largest kernels by device time")
    args = ap.parse_args()
    with open(args.plan) as f:
        plan = json.load(f)
    variants = [v.strip() for v in args.variant.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant {unknown}; known: {', '.join(VARIANTS)}")
    runs = [(v, attn) for v in variants for attn in (args.attn.split(",") if v == "tutorial" else ["sdpa"])]
    status = 0
    for variant, attn in runs:
        try:
            if variant == "tutorial":
                result = run_one(plan, attn, args.warmup, args.steps)
            else:
                result = run_tuned(plan, variant, args.warmup, args.steps, args.kernels)
        except Exception as e:  # report and go on with the next variant / implementation
            traceback.print_exc()
            result = error_row(plan, variant, attn, e)
            status = 1
        finally:
            if variant == "tuned-compile":
                try:
                    import torch._dynamo as dynamo

                    dynamo.reset()  # drops the compiled layers' references to the model
                except Exception:
                    pass
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
