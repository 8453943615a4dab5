// Preloaded (node --import) into a splint process to make the file system report "disk full"
// (ENOSPC) for writes under SPLINT_FAULT_ENOSPC_DIR once SPLINT_FAULT_ENOSPC_AFTER bytes have
// been written there (counting only paths containing SPLINT_FAULT_ENOSPC_MATCH, when set): the fault enters through the real write calls splint makes (FileHandle
// writes, writeFile, write streams), the way a full disk would, where no size-limited file system
// can be mounted. Builtin ESM exports are re-synced so `import { writeFile } from "node:fs/promises"`
// sees the patched functions.
import fs from "node:fs";
import fsp from "node:fs/promises";
import { syncBuiltinESMExports } from "node:module";
import path from "node:path";

const dir = path.resolve(process.env.SPLINT_FAULT_ENOSPC_DIR ?? "/nonexistent");
let budget = Number(process.env.SPLINT_FAULT_ENOSPC_AFTER ?? "0");
// Optional: only paths containing this text count (e.g. "checkpoint-4": the disk fills just then).
const match = process.env.SPLINT_FAULT_ENOSPC_MATCH ?? "";
const inside = (p) => typeof p === "string" && path.resolve(p).startsWith(dir + path.sep) && path.resolve(p).includes(match);
const enospc = (p) => Object.assign(new Error(`ENOSPC: no space left on device, write '${p}'`), { code: "ENOSPC", errno: -28, syscall: "write", path: p });
const spend = (p, n) => {
  if (!inside(p)) return false;
  if (budget - n < 0) return true;
  budget -= n;
  return false;
};
const lengthOf = (data) => (typeof data === "string" ? Buffer.byteLength(data) : (data?.byteLength ?? 0));

// FileHandle.write / writeFile: the handle remembers its path.
const paths = new WeakMap();
const open = fsp.open;
fsp.open = async function (p, ...rest) {
  const handle = await open.call(this, p, ...rest);
  paths.set(handle, String(p));
  return handle;
};
const probe = await open(process.execPath, "r");
const proto = Object.getPrototypeOf(probe);
await probe.close();
const handleWrite = proto.write;
proto.write = function (data, ...rest) {
  const p = paths.get(this);
  const n = typeof rest[1] === "number" ? rest[1] : lengthOf(data);
  if (p && spend(p, n)) return Promise.reject(enospc(p));
  return handleWrite.call(this, data, ...rest);
};
const handleWriteFile = proto.writeFile;
proto.writeFile = function (data, ...rest) {
  const p = paths.get(this);
  if (p && spend(p, lengthOf(data))) return Promise.reject(enospc(p));
  return handleWriteFile.call(this, data, ...rest);
};

const writeFile = fsp.writeFile;
fsp.writeFile = function (p, data, ...rest) {
  if (spend(String(p), lengthOf(data))) return Promise.reject(enospc(String(p)));
  return writeFile.call(this, p, data, ...rest);
};
const appendFile = fsp.appendFile;
fsp.appendFile = function (p, data, ...rest) {
  if (spend(String(p), lengthOf(data))) return Promise.reject(enospc(String(p)));
  return appendFile.call(this, p, data, ...rest);
};
const writeFileSync = fs.writeFileSync;
fs.writeFileSync = function (p, data, ...rest) {
  if (spend(String(p), lengthOf(data))) throw enospc(String(p));
  return writeFileSync.call(this, p, data, ...rest);
};
const createWriteStream = fs.createWriteStream;
fs.createWriteStream = function (p, ...rest) {
  const stream = createWriteStream.call(this, p, ...rest);
  const write = stream._write.bind(stream);
  stream._write = (chunk, encoding, callback) => {
    if (spend(String(p), lengthOf(chunk))) return callback(enospc(String(p)));
    return write(chunk, encoding, callback);
  };
  if (stream._writev) {
    const writev = stream._writev.bind(stream);
    stream._writev = (chunks, callback) => {
      if (spend(String(p), chunks.reduce((sum, c) => sum + lengthOf(c.chunk), 0))) return callback(enospc(String(p)));
      return writev(chunks, callback);
    };
  }
  return stream;
};
syncBuiltinESMExports();
