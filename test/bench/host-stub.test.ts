/**
 * The CUDA backend's TypeScript side on a machine without a GPU: bench/host-stub.ts builds a
 * library with the real C ABI whose kernels do nothing, so every argument check, dtype choice and
 * koffi call of a training run and a greedy decode runs for real (the numbers are zeros). The stub
 * counts live device bytes exactly, so a temporary the backend forgets to free shows up here, in
 * CI, instead of as a slow leak on the GPU machine.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { buildHostStub } from "../../bench/host-stub.ts";
import { profileBackend } from "../../bench/step-profile.ts";
import { createGraph } from "../../src/autograd/tape.ts";
import { createCudaBackend } from "../../src/backends/cuda/index.ts";
import { loadAdapter } from "../../src/lora/adapter.ts";
import { generateMistral3 } from "../../src/models/mistral3/generate.ts";
import { freeMistral3, loadMistral3 } from "../../src/models/mistral3/model.ts";
import { trainLoop } from "../../src/train/trainer.ts";
import { fixtureBatches, fixtureRecipe, FIXTURES } from "../train/fixture-batches.ts";
import { quiet } from "../train/quiet-output.ts";

/** The training batch's right-padded rows moved to the right end, as generation takes prompts. */
function leftPadded(ids: Int32Array, mask: Int32Array, batch: number, length: number): { inputIds: Int32Array; attentionMask: Int32Array } {
  const inputIds = new Int32Array(ids.length);
  const attentionMask = new Int32Array(mask.length);
  for (let b = 0; b < batch; b++) {
    const row = b * length;
    const real = mask.subarray(row, row + length).reduce((a, m) => a + m, 0);
    inputIds.set(ids.subarray(row, row + real), row + length - real);
    attentionMask.fill(1, row + length - real, row + length);
  }
  return { inputIds, attentionMask };
}

for (const gradientCheckpointing of [false, true]) {
  test(`a bf16-tier training run and a decode go through the CUDA backend, and a second run leaves no device bytes more than the first (checkpointing ${gradientCheckpointing ? "on" : "off"})`, async () => {
    const dir = await mkdtemp(join(tmpdir(), "splint-host-stub-"));
    const backend = createCudaBackend(buildHostStub(join(dir, "lib")));
    try {
      assert.match(backend.device, /host stub/);
      const model = await loadMistral3(join(FIXTURES, "models", "tiny"), backend, { matmulPrecision: "bf16" });
      const adapter = await loadAdapter(join(FIXTURES, "train", "tiny", "initial_adapter"), model.linears, backend);
      const config = { ...fixtureRecipe(3), gradient_checkpointing: gradientCheckpointing };
      const train = async (run: string) => {
        const steps: number[] = [];
        await trainLoop({ backend, model, adapter, config, source: await fixtureBatches("labels"), runDir: join(dir, run), output: quiet, onStep: (r) => steps.push(r.step) });
        assert.deepEqual(steps, [1, 2, 3]);
        return backend.memory().live;
      };
      // The first run leaves what the backend caches per shape (RoPE tables, segment tables); a
      // second run of the same shapes must leave exactly as much: moments, gradients, bf16 copies
      // and every temporary freed.
      const afterFirst = await train("run1");
      assert.equal(await train("run2"), afterFirst);

      const { inputs } = await (await fixtureBatches("labels")).get(0, 0);
      const prompts = leftPadded(inputs.inputIds, inputs.attentionMask!, inputs.batch, inputs.seqLen);
      const decode = () => {
        const result = generateMistral3(model, () => createGraph(backend, { recording: false }), { batch: inputs.batch, seqLen: inputs.seqLen, ...prompts, images: inputs.images }, { maxNewTokens: 3, eosTokenIds: [], padTokenId: 0 });
        assert.equal(result.sequences.length, inputs.batch * (inputs.seqLen + 3));
        return backend.memory().live;
      };
      const afterDecode = decode();
      assert.equal(decode(), afterDecode);

      freeMistral3(model);
    } finally {
      backend.dispose();
      await rm(dir, { recursive: true, force: true });
    }
  });
}

test("the activity timeline's entries bind and marshal through the CUDA backend (the stub records no device work)", async () => {
  const dir = await mkdtemp(join(tmpdir(), "splint-host-stub-"));
  const backend = createCudaBackend(buildHostStub(join(dir, "lib")));
  try {
    backend.activity.start();
    const before = backend.activity.timestamp();
    backend.zeros([4], "f32").free();
    const after = backend.activity.timestamp();
    assert.ok(after >= before);
    const timeline = backend.activity.stop(5);
    assert.deepEqual([timeline.kernels, timeline.memcpys, timeline.memsets, timeline.busyNs, timeline.distinctNames], [0, 0, 0, 0, 0]);
    assert.equal(timeline.firstStartNs, 0n);
    assert.deepEqual(timeline.top, []);
    // activity_records is called after stop and binds too; the stub kept nothing.
    assert.deepEqual([timeline.records.names, timeline.records.startNs.length, timeline.records.endNs.length, timeline.records.nameIndex.length], [[], 0, 0, 0]);
  } finally {
    backend.dispose();
    await rm(dir, { recursive: true, force: true });
  }
});

test("programmatic dependent launch is on by default, set through the ABI, and off from SPLINT_CUDA_PDL=0", async () => {
  const dir = await mkdtemp(join(tmpdir(), "splint-host-stub-"));
  const lib = buildHostStub(join(dir, "lib"));
  const saved = process.env.SPLINT_CUDA_PDL;
  try {
    delete process.env.SPLINT_CUDA_PDL;
    const plain = createCudaBackend(lib);
    assert.equal(plain.programmaticLaunch, true);
    plain.setProgrammaticLaunch(false);
    assert.equal(plain.programmaticLaunch, false);
    plain.setProgrammaticLaunch(true);
    assert.equal(plain.programmaticLaunch, true);
    plain.dispose();
    assert.throws(() => plain.setProgrammaticLaunch(true), /disposed/);
    process.env.SPLINT_CUDA_PDL = "0";
    const off = createCudaBackend(lib);
    assert.equal(off.programmaticLaunch, false);
    off.dispose();
    process.env.SPLINT_CUDA_PDL = "yes";
    assert.throws(() => createCudaBackend(lib), /SPLINT_CUDA_PDL=yes: expected 0 \(off\) or 1/);
  } finally {
    if (saved === undefined) delete process.env.SPLINT_CUDA_PDL;
    else process.env.SPLINT_CUDA_PDL = saved;
    await rm(dir, { recursive: true, force: true });
  }
});

test("a device without programmatic dependent launch runs without it by default, and SPLINT_CUDA_PDL=1 makes that an error", async () => {
  const dir = await mkdtemp(join(tmpdir(), "splint-host-stub-"));
  // As the library answers on a GPU before sm_90: SPLINT_INVALID_ARGUMENT for on, fine for off.
  const lib = buildHostStub(join(dir, "lib"), { splint_cuda_set_programmatic_launch: "return on ? 1 : 0;" });
  const saved = process.env.SPLINT_CUDA_PDL;
  try {
    delete process.env.SPLINT_CUDA_PDL;
    const older = createCudaBackend(lib);
    assert.equal(older.programmaticLaunch, false);
    assert.throws(() => older.setProgrammaticLaunch(true), /setProgrammaticLaunch/);
    older.dispose();
    process.env.SPLINT_CUDA_PDL = "1";
    assert.throws(() => createCudaBackend(lib), /setProgrammaticLaunch/);
  } finally {
    if (saved === undefined) delete process.env.SPLINT_CUDA_PDL;
    else process.env.SPLINT_CUDA_PDL = saved;
    await rm(dir, { recursive: true, force: true });
  }
});

test("the step profiler times calls only between start() and finish(), then puts the backend's own methods back", async () => {
  const dir = await mkdtemp(join(tmpdir(), "splint-host-stub-"));
  const backend = createCudaBackend(buildHostStub(join(dir, "lib")));
  try {
    const own = { zeros: backend.zeros, add: backend.add, release: backend.release };
    const profiler = profileBackend(backend, 2);
    assert.equal(backend.zeros, own.zeros, "nothing is wrapped before start()");
    profiler.start();
    assert.notEqual(backend.zeros, own.zeros);
    assert.equal(backend.release, own.release, "untimed methods stay as they are");
    assert.throws(() => profiler.start(), /already running/);
    const a = backend.zeros([8], "f32");
    const b = backend.zeros([8], "f32");
    backend.add(a, b).free();
    const profile = profiler.finish();
    a.free();
    b.free();
    assert.equal(profile.backendCalls, 3);
    assert.deepEqual(profile.classes.map((c) => c.calls).reduce((x, y) => x + y, 0), 3);
    assert.deepEqual([backend.zeros, backend.add, backend.release], [own.zeros, own.add, own.release], "the originals are back");
    // Calls after finish() are not recorded by the next profiled window either.
    backend.zeros([2], "f32").free();
    profiler.start();
    assert.equal(profiler.finish().backendCalls, 0);
  } finally {
    backend.dispose();
    await rm(dir, { recursive: true, force: true });
  }
});
