// src/util/lock.ts: exclusive, released, stale locks (dead pid, unreadable file) recovered, a lock
// of another host respected.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile, utimes, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { BusyError } from "../../src/util/errors.ts";
import { LOCK_FILE, lockFolder } from "../../src/util/lock.ts";
import { withTempDir } from "../helpers/temp-dir.ts";

test("a folder lock is exclusive, names its holder, and is released", async () => {
  await withTempDir("splint-faults-lock-", async (dir) => {
    const lock = await lockFolder(dir, "splint train");
    const owner = JSON.parse(await readFile(join(dir, LOCK_FILE), "utf8")) as { pid: number; command: string };
    assert.equal(owner.pid, process.pid);
    await assert.rejects(lockFolder(dir, "splint run"), (e) => e instanceof BusyError && e.message.includes(`pid ${process.pid}`) && e.message.includes("splint train"));
    lock.release();
    assert.ok(!existsSync(join(dir, LOCK_FILE)));
    (await lockFolder(dir, "again")).release();
  });
});

test("stale locks (a dead pid, or a file left empty by a crash) are taken over; another host's lock is respected", async () => {
  await withTempDir("splint-faults-lock-", async (dir) => {
    const child = spawn(process.execPath, ["-e", ""]);
    const pid = await new Promise<number>((resolve) => child.on("exit", () => resolve(child.pid!)));
    await writeFile(join(dir, LOCK_FILE), JSON.stringify({ pid, host: hostname(), since: "then", command: "splint train" }));
    const taken = await lockFolder(dir, "splint train");
    assert.equal(taken.recoveredStale?.pid, pid);
    taken.release();
    await writeFile(join(dir, LOCK_FILE), "");
    // Fresh, it may be another process between creating and writing it; old, it is a crash's.
    await assert.rejects(lockFolder(dir, "splint train"), (e) => e instanceof BusyError && /being locked/.test(e.message));
    const old = new Date(Date.now() - 60_000);
    await utimes(join(dir, LOCK_FILE), old, old);
    const fromEmpty = await lockFolder(dir, "splint train");
    assert.ok(fromEmpty.recoveredStale);
    fromEmpty.release();
    await writeFile(join(dir, LOCK_FILE), JSON.stringify({ pid: 1, host: "another-machine", since: "then", command: "splint train" }));
    await assert.rejects(lockFolder(dir, "splint train"), (e) => e instanceof BusyError && /another-machine/.test(e.message) && /delete .*\.splint\.lock/.test(e.hint ?? ""));
  });
});
