import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { cp, mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { exportGguf } from "../../src/export/gguf/export.ts";
import { openCheckpoint, toFloat32 } from "../../src/io/safetensors.ts";
import { mergeAdapter } from "../../src/lora/merge.ts";
import { runSplint } from "../helpers/cli.ts";
import { withTempDir } from "../helpers/temp-dir.ts";
import { readGguf, type ReadGguf } from "./gguf-read.ts";

const F = join(import.meta.dirname, "..", "fixtures");
const TINY = join(F, "models", "tiny");
const config = JSON.parse(readFileSync(join(TINY, "config.json"), "utf8")) as {
  text_config: Record<string, number>;
  vision_config: Record<string, number>;
};
const t = config.text_config;
const v = config.vision_config;

/**
 * The tensors llama.cpp's loaders ask for, with the shapes they pass to create_tensor (ggml order,
 * innermost first): src/models/mistral3.cpp for the text model, tools/mtmd/clip.cpp
 * (PROJECTOR_TYPE_PIXTRAL and the shared vision-layer names, TN_* in clip-impl.h) for the mmproj.
 */
function llamaCppTextTable(): Map<string, number[]> {
  const nEmbd = t.hidden_size!;
  const nHead = t.num_attention_heads!;
  const nKv = t.num_key_value_heads!;
  const hd = t.head_dim!;
  const nFf = t.intermediate_size!;
  const nVocab = t.vocab_size!;
  const m = new Map<string, number[]>([
    ["token_embd.weight", [nEmbd, nVocab]],
    ["output_norm.weight", [nEmbd]],
    ["output.weight", [nEmbd, nVocab]],
  ]);
  for (let i = 0; i < t.num_hidden_layers!; i++) {
    m.set(`blk.${i}.attn_norm.weight`, [nEmbd]);
    m.set(`blk.${i}.attn_q.weight`, [nEmbd, hd * nHead]);
    m.set(`blk.${i}.attn_k.weight`, [nEmbd, hd * nKv]);
    m.set(`blk.${i}.attn_v.weight`, [nEmbd, hd * nKv]);
    m.set(`blk.${i}.attn_output.weight`, [hd * nHead, nEmbd]);
    m.set(`blk.${i}.ffn_norm.weight`, [nEmbd]);
    m.set(`blk.${i}.ffn_gate.weight`, [nEmbd, nFf]);
    m.set(`blk.${i}.ffn_down.weight`, [nFf, nEmbd]);
    m.set(`blk.${i}.ffn_up.weight`, [nEmbd, nFf]);
  }
  return m;
}

function llamaCppClipTable(): Map<string, number[]> {
  const d = v.hidden_size!;
  const ff = v.intermediate_size!;
  const p = v.patch_size!;
  const m = new Map<string, number[]>([
    ["v.patch_embd.weight", [p, p, 3, d]],
    ["v.pre_ln.weight", [d]],
    ["mm.input_norm.weight", [d]],
    ["mm.patch_merger.weight", [d * 4, d]],
    ["mm.1.weight", [d, t.hidden_size!]],
    ["mm.2.weight", [t.hidden_size!, t.hidden_size!]],
    ["v.token_embd.img_break", [t.hidden_size!]],
  ]);
  for (let i = 0; i < v.num_hidden_layers!; i++) {
    for (const n of ["attn_q", "attn_k", "attn_v", "attn_out"]) m.set(`v.blk.${i}.${n}.weight`, [d, d]);
    m.set(`v.blk.${i}.ln1.weight`, [d]);
    m.set(`v.blk.${i}.ln2.weight`, [d]);
    m.set(`v.blk.${i}.ffn_gate.weight`, [d, ff]);
    m.set(`v.blk.${i}.ffn_up.weight`, [d, ff]);
    m.set(`v.blk.${i}.ffn_down.weight`, [ff, d]);
  }
  return m;
}

function assertTable(file: ReadGguf, table: Map<string, number[]>, what: string): void {
  assert.deepEqual([...file.tensors.keys()].sort(), [...table.keys()].sort(), `${what}: tensor names`);
  for (const [name, ne] of table) assert.deepEqual(file.tensors.get(name)!.ne, ne, `${what}: ${name} shape`);
}

async function exportTo(root: string, quant: "bf16" | "f16" | "q8_0" | "q4_k_m", extra: { adapterDir?: string; modelDir?: string } = {}) {
  const outDir = join(root, `out-${quant}${extra.adapterDir ? "-lora" : ""}`);
  const result = await exportGguf({ modelDir: extra.modelDir ?? TINY, outDir, quant, ...(extra.adapterDir ? { adapterDir: extra.adapterDir } : {}) });
  return { result, text: await readGguf(join(outDir, result.text.file)), mmproj: await readGguf(join(outDir, result.mmproj.file)), outDir };
}

/** Rows of a [rows, cols] tensor as HF lays them out, from GGUF's adjacent-pair layout (inverse of the export's permutation). */
function unpermute(values: Float32Array, rows: number, cols: number, heads: number): Float32Array {
  const dh = rows / heads;
  const out = new Float32Array(values.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < dh / 2; i++) {
      for (let j = 0; j < 2; j++) out.set(values.subarray((h * dh + 2 * i + j) * cols, (h * dh + 2 * i + j + 1) * cols), (h * dh + j * (dh / 2) + i) * cols);
    }
  }
  return out;
}

test("text GGUF: llama.cpp's mistral3 tensor table, hyper-parameters, YaRN and llama-4 keys, tekken tokenizer", async () => {
  await withTempDir("splint-gguf-", async (root) => {
    const { text } = await exportTo(root, "bf16");
    assertTable(text, llamaCppTextTable(), "text");
    const md = text.metadata;
    assert.equal(md["general.architecture"], "mistral3");
    assert.equal(md["general.file_type"], 32);
    const want: Record<string, number | string> = {
      "mistral3.vocab_size": 1500,
      "mistral3.context_length": 4096,
      "mistral3.embedding_length": 48,
      "mistral3.feed_forward_length": 96,
      "mistral3.block_count": 2,
      "mistral3.attention.head_count": 4,
      "mistral3.attention.head_count_kv": 2,
      "mistral3.attention.key_length": 16,
      "mistral3.attention.value_length": 16,
      "mistral3.rope.dimension_count": 16,
      "mistral3.rope.freq_base": 1e6,
      "mistral3.rope.scaling.type": "yarn",
      "mistral3.rope.scaling.factor": 16,
      "mistral3.rope.scaling.original_context_length": 16,
      "mistral3.rope.scaling.yarn_beta_fast": 32,
      "mistral3.rope.scaling.yarn_beta_slow": 1,
      "mistral3.rope.scaling.yarn_log_multiplier": 1,
    };
    for (const [k, value] of Object.entries(want)) assert.equal(md[k], value, k);
    assert.ok(Math.abs((md["mistral3.attention.layer_norm_rms_epsilon"] as number) - 1e-5) < 1e-12);
    assert.ok(Math.abs((md["mistral3.attention.temperature_scale"] as number) - 0.1) < 1e-7);
    // gguf-py's typing: counts u32 (4), floats f32 (6), token types i32 arrays (9/5)
    assert.equal(text.types["mistral3.block_count"], "4");
    assert.equal(text.types["mistral3.rope.freq_base"], "6");
    assert.equal(text.types["tokenizer.ggml.token_type"], "9/5");

    const tj = JSON.parse(readFileSync(join(TINY, "tokenizer.json"), "utf8")) as { model: { vocab: Record<string, number>; merges: [string, string][] } };
    const tokens = md["tokenizer.ggml.tokens"] as string[];
    assert.equal(tokens.length, 1500);
    for (const [token, id] of Object.entries(tj.model.vocab)) assert.equal(tokens[id], token);
    assert.deepEqual(md["tokenizer.ggml.merges"], tj.model.merges.map(([a, b]) => `${a} ${b}`));
    const types = md["tokenizer.ggml.token_type"] as number[];
    assert.equal(types[1], 3, "<s> is CONTROL");
    assert.equal(types[1200], 1, "a BPE token is NORMAL");
    assert.equal(md["tokenizer.ggml.model"], "gpt2");
    assert.equal(md["tokenizer.ggml.pre"], "tekken");
    assert.deepEqual([md["tokenizer.ggml.bos_token_id"], md["tokenizer.ggml.eos_token_id"], md["tokenizer.ggml.padding_token_id"], md["tokenizer.ggml.unknown_token_id"]], [1, 2, 11, 0]);
    assert.equal(md["tokenizer.chat_template"], readFileSync(join(TINY, "chat_template.jinja"), "utf8"));
    assert.equal(md["tokenizer.ggml.add_bos_token"], true);
  });
});

test("text GGUF values: bf16 bits kept, q/k rows in llama.cpp's adjacent-pair rope order", async () => {
  await withTempDir("splint-gguf-", async (root) => {
    const { text } = await exportTo(root, "bf16");
    const source = await openCheckpoint(TINY);
    try {
      const embed = toFloat32(await source.read("language_model.model.embed_tokens.weight"));
      assert.deepEqual(text.tensors.get("token_embd.weight")!.values(), embed);
      const q = toFloat32(await source.read("language_model.model.layers.1.self_attn.q_proj.weight"));
      const got = text.tensors.get("blk.1.attn_q.weight")!.values();
      assert.notDeepEqual(got, q, "rows are permuted");
      assert.deepEqual(unpermute(got, 64, 48, 4), q);
      // row 2i+j of head h is source row j·d/2 + i: row 1 (i 0, j 1) is source row 8
      assert.deepEqual(got.subarray(48, 96), q.subarray(8 * 48, 9 * 48));
      const k = toFloat32(await source.read("language_model.model.layers.0.self_attn.k_proj.weight"));
      assert.deepEqual(unpermute(text.tensors.get("blk.0.attn_k.weight")!.values(), 32, 48, 2), k);
      const norm = toFloat32(await source.read("language_model.model.norm.weight"));
      assert.equal(text.tensors.get("output_norm.weight")!.type, "F32");
      assert.deepEqual(text.tensors.get("output_norm.weight")!.values(), norm);
    } finally {
      await source.close();
    }
    for (const [name, tensor] of text.tensors) assert.equal(tensor.offset % 32, 0, `${name} is aligned`);
  });
});

test("mmproj GGUF: clip.cpp's pixtral tensor table and keys; the [IMG_BREAK] row of the embedding", async () => {
  await withTempDir("splint-gguf-", async (root) => {
    const { mmproj } = await exportTo(root, "f16");
    assertTable(mmproj, llamaCppClipTable(), "mmproj");
    const md = mmproj.metadata;
    assert.equal(md["general.architecture"], "clip");
    assert.equal(md["general.type"], "mmproj");
    assert.equal(md["clip.projector_type"], "pixtral");
    assert.equal(md["clip.has_vision_encoder"], true);
    assert.equal(md["clip.vision.projection_dim"], 48);
    assert.equal(md["clip.vision.embedding_length"], 32);
    assert.equal(md["clip.vision.feed_forward_length"], 64);
    assert.equal(md["clip.vision.block_count"], 2);
    assert.equal(md["clip.vision.attention.head_count"], 2);
    assert.equal(md["clip.vision.patch_size"], 14);
    assert.equal(md["clip.vision.image_size"], 112);
    assert.equal(md["clip.vision.spatial_merge_size"], 2);
    assert.equal(md["clip.use_silu"], true);
    const proc = JSON.parse(readFileSync(join(TINY, "processor_config.json"), "utf8")) as { image_processor: { image_mean: number[] } };
    const mean = md["clip.vision.image_mean"] as number[];
    assert.equal(mean.length, 3);
    proc.image_processor.image_mean.forEach((m, i) => assert.ok(Math.abs(mean[i]! - m) < 1e-6, `image_mean[${i}]`));
    assert.equal(mmproj.tensors.get("v.patch_embd.weight")!.type, "F16");
    const source = await openCheckpoint(TINY);
    try {
      const embed = toFloat32(await source.read("language_model.model.embed_tokens.weight"));
      assert.deepEqual(mmproj.tensors.get("v.token_embd.img_break")!.values(), embed.slice(12 * 48, 13 * 48));
      const vq = toFloat32(await source.read("vision_tower.transformer.layers.0.attention.q_proj.weight"));
      const got = mmproj.tensors.get("v.blk.0.attn_q.weight")!.values();
      const expected = unpermute(got, 32, 32, 2);
      for (let i = 0; i < vq.length; i++) assert.ok(Math.abs(expected[i]! - vq[i]!) <= Math.abs(vq[i]!) * 1e-3 + 1e-7, "f16 of the permuted vision q");
    } finally {
      await source.close();
    }
  });
});

test("an adapter is merged on the way: the GGUF holds exactly what splint merge writes", async () => {
  await withTempDir("splint-gguf-", async (root) => {
    const adapterDir = join(F, "lora", "tiny", "adapter");
    const { text, mmproj, result } = await exportTo(root, "bf16", { adapterDir });
    assert.ok(result.mergedModules > 0);
    const merged = join(root, "merged");
    await mergeAdapter({ modelDir: TINY, adapterDir, outDir: merged, dtype: "bf16" });
    const { text: fromMerged, mmproj: mmFromMerged } = await exportTo(root, "bf16", { modelDir: merged });
    let differentFromBase = 0;
    const { text: base } = await exportTo(root, "f16");
    for (const [name, tensor] of text.tensors) {
      assert.deepEqual(tensor.bytes, fromMerged.tensors.get(name)!.bytes, name);
      if (/attn_q|attn_v/.test(name) && base.tensors.get(name)!.values().some((x, i) => Math.abs(x - tensor.values()[i]!) > 1e-3)) differentFromBase++;
    }
    for (const [name, tensor] of mmproj.tensors) assert.deepEqual(tensor.bytes, mmFromMerged.tensors.get(name)!.bytes, name);
    assert.ok(differentFromBase > 0, "the adapter changed some projections");
  });
});

test("q8_0 and q4_k_m: types per llama.cpp's rules, with fallbacks for rows that do not divide into blocks", async () => {
  await withTempDir("splint-gguf-", async (root) => {
    const { text, mmproj } = await exportTo(root, "q8_0");
    // in-features 48 (not a multiple of 32) cannot be Q8_0; o_proj (64) and down_proj (96) can
    assert.equal(text.tensors.get("blk.0.attn_q.weight")!.type, "F16");
    assert.equal(text.tensors.get("blk.0.attn_output.weight")!.type, "Q8_0");
    assert.equal(text.tensors.get("blk.0.ffn_down.weight")!.type, "Q8_0");
    assert.equal(text.metadata["general.file_type"], 7);
    assert.equal(text.metadata["general.quantization_version"], 2);
    assert.equal(mmproj.tensors.get("v.blk.0.attn_q.weight")!.type, "Q8_0");
    assert.equal(mmproj.tensors.get("v.patch_embd.weight")!.type, "F32");
    const q4 = await exportTo(root, "q4_k_m");
    assert.equal(q4.text.metadata["general.file_type"], 15);
    assert.equal(q4.text.tensors.get("blk.0.ffn_down.weight")!.type, "Q8_0", "96-wide rows: the Q6_K/Q4_K fallback");
    assert.equal(q4.mmproj.tensors.get("v.blk.0.attn_q.weight")!.type, "F16");
  });
});

test("a tekken.json-only model exports the same vocabulary and merges as its tokenizer.json", async () => {
  await withTempDir("splint-gguf-", async (root) => {
    const dir = join(root, "tekken-model");
    await mkdir(dir);
    for (const f of ["config.json", "model.safetensors", "chat_template.jinja", "processor_config.json"]) await cp(join(TINY, f), join(dir, f));
    await cp(join(F, "models", "tiny-tekken", "tekken.json"), join(dir, "tekken.json"));
    const fromTekken = await exportTo(root, "f16", { modelDir: dir });
    const fromJson = await exportTo(root, "bf16");
    assert.deepEqual(fromTekken.text.metadata["tokenizer.ggml.tokens"], fromJson.text.metadata["tokenizer.ggml.tokens"]);
    assert.deepEqual(fromTekken.text.metadata["tokenizer.ggml.merges"], fromJson.text.metadata["tokenizer.ggml.merges"]);
  });
});

test("bad input: a non-empty --out, an unknown --quant or --format, a missing adapter; nothing is left behind", async () => {
  await withTempDir("splint-gguf-", async (root) => {
    const busy = join(root, "busy");
    await mkdir(busy);
    await writeFile(join(busy, "x"), "");
    await assert.rejects(exportGguf({ modelDir: TINY, outDir: busy, quant: "q8_0" }), /already exists and is not empty/);
    const cli = runSplint(["export", "--model", TINY, "--format", "gguf", "--quant", "q5_k", "--out", join(root, "q5")]);
    assert.equal(cli.status, 2);
    assert.match(cli.stderr, /--quant: must be one of bf16, f16, q8_0, q4_k_m, got "q5_k"/);
    const fmt = runSplint(["export", "--model", TINY, "--format", "onnx", "--out", join(root, "onnx")]);
    assert.match(fmt.stderr, /--format: must be gguf/);
    const out = join(root, "never");
    await assert.rejects(exportGguf({ modelDir: TINY, adapterDir: join(root, "no-such-adapter"), outDir: out, quant: "f16" }));
    assert.equal(existsSync(out), false);
    assert.deepEqual((await readdir(root)).sort(), ["busy"]);
  });
});

test("splint export --help shows examples; the CLI writes text, mmproj and Modelfile", async () => {
  const help = runSplint(["export", "--help"]);
  assert.equal(help.status, 0);
  assert.match(help.stdout, /Examples:/);
  assert.match(help.stdout, /llama-mtmd-cli/);
  await withTempDir("splint-gguf-", async (root) => {
    const out = join(root, "cli");
    const run = runSplint(["export", "--model", TINY, "--format", "gguf", "--quant", "f16", "--out", out, "--json"]);
    assert.equal(run.status, 0, run.stderr);
    const result = JSON.parse(run.stdout) as { text: { file: string }; mmproj: { file: string } };
    assert.deepEqual((await readdir(out)).sort(), ["Modelfile", result.mmproj.file, result.text.file].sort());
    const modelfile = await readFile(join(out, "Modelfile"), "utf8");
    assert.match(modelfile, new RegExp(`^FROM \\./${result.text.file}$`, "m"));
    assert.match(modelfile, /PARAMETER stop "<\/s>"/);
    assert.match(modelfile, /\[INST\]\{\{ \$m\.Content \}\}\[\/INST\]/);
  });
});
