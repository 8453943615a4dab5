import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { saveDatasetDict } from "../../src/data/hf-dataset.ts";
import { predictImages } from "../../src/eval/predict.ts";
import { Engine } from "../../src/serve/engine.ts";
import { ModelPool } from "../../src/serve/models.ts";
import { createApp, listen } from "../../src/serve/server.ts";
import { runTraining } from "../../src/train/run.ts";
import { withTempDir } from "../helpers/temp-dir.ts";
import { TINY_MODEL, TINY_RECIPE, tinyDataset } from "../train/tiny-dataset.ts";
import { quietOutput, xrayDataUrl } from "./serve-fixture.ts";

test("an adapter trained on its own classes is asked with them, base and adapter alike, with predict's numbers", async () => {
  await withTempDir("splint-serve-trained-", async (root) => {
    const dataset = join(root, "data");
    await saveDatasetDict(dataset, tinyDataset(), "arrow");
    const run = await runTraining({ modelDir: TINY_MODEL, dataset, outDir: join(root, "run"), config: { ...TINY_RECIPE, num_train_epochs: 1 }, output: quietOutput });
    const pool = await ModelPool.open({ modelDir: TINY_MODEL, baseId: "base", adapters: [{ id: "tuned", dir: run.adapterDir }], backend: "cpu", output: quietOutput });
    const engine = new Engine(pool, { maxBatch: 4, maxQueue: 8, batchWaitMs: 0, maxTokensLimit: 8, maxPromptTokens: 4096, chatTemplate: "model" });
    await engine.warm();
    const server = await listen(createApp({ engine, maxBodyBytes: 1 << 20, requestTimeoutMs: 30_000, allowRemoteImages: false, log: () => undefined }), "127.0.0.1", 0);
    try {
      const image = await xrayDataUrl(3);
      const file = join(root, "x.png");
      await writeFile(file, Buffer.from(image.split(",")[1]!, "base64"));
      const taught = tinyDataset().classNames;
      for (const [model, adapter] of [["tuned", run.adapterDir], ["base", undefined]] as const) {
        const response = await fetch(`${server.url}/v1/classify`, { method: "POST", body: JSON.stringify({ model, image }) });
        const body = (await response.json()) as { probabilities: Record<string, number> };
        assert.deepEqual(Object.keys(body.probabilities), taught, `${model} answers with the adapter's classes`);
        // predict on the base is told the classes; on the adapter it finds them itself.
        const [expected] = await predictImages({ model: TINY_MODEL, adapter, images: [file], mode: "score", maxNewTokens: 1, batchSize: 1, output: quietOutput, ...(adapter ? {} : { classNames: taught }) });
        for (const name of taught) assert.ok(Math.abs(body.probabilities[name]! - expected!.probabilities![name]!) < 1e-9, `${model} ${name}`);
      }
    } finally {
      engine.close();
      await server.close();
    }
  });
});
