import type { Output } from "../../src/cli/output.ts";

/** An Output that prints nothing (tests). */
export const quiet: Output = { json: true, log() {}, result() {}, progress: () => ({ update() {}, increment() {}, stop() {} }) };
