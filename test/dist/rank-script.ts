// A rank of test/dist/launch.test.ts's fault test: one all-reduce, then rank FAIL_RANK exits 3
// while the others wait in a second all-reduce that can never complete.
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { distEnvFrom } from "../../src/dist/env.ts";
import { communicatorFor } from "../../src/dist/setup.ts";

const env = distEnvFrom()!;
const backend = createCpuBackend();
const comm = await communicatorFor(env, backend);
const t = backend.upload(Float32Array.from([env.rank + 1]), [1], "f32");
await comm.allReduce(t, "sum");
process.stderr.write(`sum ${backend.read(t)[0]}\n`);
if (env.rank === Number(process.env.FAIL_RANK)) process.exit(3);
try {
  await comm.allReduce(t, "sum");
  await comm.destroy();
} catch (error) {
  process.stderr.write(`${(error as Error).message}\n`);
  comm.abort();
  process.exitCode = 4;
}
