import { createConnection, createServer, type Server, type Socket } from "node:net";
import { SplintError } from "../util/errors.ts";

/**
 * A key-value store over TCP that the ranks of a run meet at (torch's TCPStore, reduced): rank 0
 * serves it on MASTER_ADDR:MASTER_PORT and every rank, rank 0 included, is a client. Rank 0 puts
 * the NCCL unique id here; the CPU communicator moves whole tensors through it.
 *
 * Nothing here may hang: every wait has a deadline, and when a rank's connection drops before it
 * said goodbye the server fails every pending and later wait with the rank's name, so the other
 * ranks stop with that message instead of waiting for a peer that is gone.
 *
 * Wire format, both ways: u32 header length, u32 payload length (little-endian), a JSON header,
 * the payload bytes.
 */

/** How long the store waits after a rank's connection drops before failing the others (see accept). */
const LOST_RANK_GRACE_MS = 500;

export class DistError extends SplintError {
  constructor(message: string, hint?: string) {
    super(message, hint);
    this.name = "DistError";
  }
}

interface Request {
  id: number;
  op: "hello" | "set" | "get" | "add" | "delete" | "bye";
  key?: string;
  rank?: number;
  delta?: number;
  timeoutMs?: number;
}

interface Reply {
  id: number;
  ok: boolean;
  error?: string;
  value?: number;
}

function frame(header: object, payload: Uint8Array = new Uint8Array(0)): Buffer {
  const head = Buffer.from(JSON.stringify(header), "utf8");
  const prefix = Buffer.alloc(8);
  prefix.writeUInt32LE(head.length, 0);
  prefix.writeUInt32LE(payload.length, 4);
  return Buffer.concat([prefix, head, payload]);
}

/** Splits a byte stream into frames (a frame may arrive in pieces, or several in one chunk). */
function onFrames(socket: Socket, handle: (header: unknown, payload: Buffer) => void): void {
  let pending: Buffer = Buffer.alloc(0);
  socket.on("data", (chunk: Buffer) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    while (pending.length >= 8) {
      const headLen = pending.readUInt32LE(0);
      const bodyLen = pending.readUInt32LE(4);
      if (pending.length < 8 + headLen + bodyLen) break;
      const header: unknown = JSON.parse(pending.subarray(8, 8 + headLen).toString("utf8"));
      const payload = Buffer.from(pending.subarray(8 + headLen, 8 + headLen + bodyLen));
      pending = pending.subarray(8 + headLen + bodyLen);
      handle(header, payload);
    }
  });
}

interface Waiter {
  key: string;
  done: (error: string | null, value?: Buffer) => void;
  timer: NodeJS.Timeout;
}

/** The server side, run by rank 0. */
export class StoreServer {
  private readonly data = new Map<string, Buffer>();
  private readonly waiters = new Set<Waiter>();
  private failure: string | null = null;
  private readonly sockets = new Set<Socket>();
  private byes = 0;
  private onBye: (() => void) | null = null;

  private constructor(
    private readonly server: Server,
    readonly port: number,
    private readonly worldSize: number,
  ) {}

  /** Listens on host:port (port 0 picks a free one, see `port`). */
  static async listen(host: string, port: number, worldSize: number): Promise<StoreServer> {
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once("error", (error: NodeJS.ErrnoException) =>
        reject(new DistError(`rank 0 cannot listen on ${host}:${port} for the other ranks (${error.code ?? error.message})`, "set MASTER_PORT to a free port, or MASTER_ADDR to an address of this host")),
      );
      server.listen(port, host, () => resolve());
    });
    const address = server.address();
    const store = new StoreServer(server, typeof address === "object" && address ? address.port : port, worldSize);
    server.on("connection", (socket) => store.accept(socket));
    return store;
  }

  private accept(socket: Socket): void {
    this.sockets.add(socket);
    let rank: number | null = null;
    let saidBye = false;
    socket.setNoDelay(true);
    const reply = (r: Reply, payload?: Buffer) => {
      if (!socket.destroyed) socket.write(frame(r, payload));
    };
    onFrames(socket, (header, payload) => {
      const req = header as Request;
      switch (req.op) {
        case "hello":
          rank = req.rank ?? null;
          return reply({ id: req.id, ok: true });
        case "bye":
          saidBye = true;
          this.byes++;
          this.onBye?.();
          return reply({ id: req.id, ok: true });
        case "set":
          this.data.set(req.key!, payload);
          this.wake(req.key!);
          return reply({ id: req.id, ok: true });
        case "delete":
          this.data.delete(req.key!);
          return reply({ id: req.id, ok: true });
        case "add": {
          const old = this.data.get(req.key!);
          const value = (old ? Number(old.toString("utf8")) : 0) + (req.delta ?? 0);
          this.data.set(req.key!, Buffer.from(String(value), "utf8"));
          this.wake(req.key!);
          return reply({ id: req.id, ok: true, value });
        }
        case "get": {
          const key = req.key!;
          const have = this.data.get(key);
          if (have) return reply({ id: req.id, ok: true }, have);
          if (this.failure) return reply({ id: req.id, ok: false, error: this.failure });
          const waiter: Waiter = {
            key,
            done: (error, value) => {
              clearTimeout(waiter.timer);
              this.waiters.delete(waiter);
              reply(error ? { id: req.id, ok: false, error } : { id: req.id, ok: true }, value);
            },
            timer: setTimeout(() => waiter.done(`timed out after ${((req.timeoutMs ?? 0) / 1000).toFixed(1)} s waiting for "${key}"`), req.timeoutMs ?? 0),
          };
          this.waiters.add(waiter);
          return;
        }
      }
    });
    const lost = () => {
      this.sockets.delete(socket);
      if (saidBye || this.failure) return;
      // A rank that vanishes mid-run (killed, crashed) must not leave the others waiting for it.
      // They fail a moment later rather than at once, so a launcher watching every rank (splint
      // train --gpus) sees the rank that died exit first and names it, not a survivor that exited
      // on its heels in the same instant.
      const message = `rank ${rank ?? "?"} of ${this.worldSize} disconnected from the store before the run ended (it crashed or was killed)`;
      setTimeout(() => {
        if (!this.failure) this.fail(message);
      }, LOST_RANK_GRACE_MS).unref();
    };
    socket.on("close", lost);
    socket.on("error", () => socket.destroy());
  }

  private wake(key: string): void {
    const value = this.data.get(key)!;
    for (const w of [...this.waiters]) if (w.key === key) w.done(null, value);
  }

  private fail(message: string): void {
    this.failure = message;
    for (const w of [...this.waiters]) w.done(message);
  }

  /**
   * Waits (up to timeoutMs) until every rank has said goodbye, so closing the store does not cut
   * off a reply still on its way to a rank.
   */
  async drain(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.byes < this.worldSize && !this.failure && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 50);
        this.onBye = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
    this.onBye = null;
  }

  /** Keys held now (tests: collectives must not leave keys behind). */
  get size(): number {
    return this.data.size;
  }

  async close(): Promise<void> {
    for (const w of [...this.waiters]) w.done("the store was closed");
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** A rank's connection to the store. */
export class StoreClient {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: { reply: Reply; payload: Buffer }) => void; reject: (e: Error) => void }>();
  private broken: Error | null = null;

  private constructor(
    private readonly socket: Socket,
    private readonly where: string,
    readonly timeoutMs: number,
  ) {
    onFrames(socket, (header, payload) => {
      const reply = header as Reply;
      const p = this.pending.get(reply.id);
      if (!p) return;
      this.pending.delete(reply.id);
      p.resolve({ reply, payload });
    });
    const lost = (why: string) => {
      this.broken ??= new DistError(`lost the connection to the store at ${where} (rank 0): ${why}`, "rank 0 crashed or was killed; see its output");
      for (const p of this.pending.values()) p.reject(this.broken);
      this.pending.clear();
    };
    socket.on("close", () => lost("closed"));
    socket.on("error", (e: NodeJS.ErrnoException) => lost(e.code ?? e.message));
  }

  /**
   * Connects to host:port, retrying until connectTimeoutMs: rank 0 may start listening a little
   * after the other ranks start.
   */
  static async connect(host: string, port: number, rank: number, opts: { timeoutMs: number; connectTimeoutMs?: number }): Promise<StoreClient> {
    const where = `${host}:${port}`;
    const deadline = Date.now() + (opts.connectTimeoutMs ?? opts.timeoutMs);
    for (;;) {
      const socket = await new Promise<Socket | NodeJS.ErrnoException>((resolve) => {
        const s = createConnection({ host, port });
        s.once("connect", () => {
          s.removeAllListeners("error");
          resolve(s);
        });
        s.once("error", (e: NodeJS.ErrnoException) => resolve(e));
      });
      if (!(socket instanceof Error)) {
        socket.setNoDelay(true);
        const client = new StoreClient(socket, where, opts.timeoutMs);
        await client.request({ op: "hello", rank });
        return client;
      }
      if (Date.now() > deadline) {
        throw new DistError(`rank ${rank} cannot reach the store of rank 0 at ${where} (${socket.code ?? socket.message})`, "check MASTER_ADDR and MASTER_PORT, and that rank 0 is running");
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  private request(req: Omit<Request, "id">, payload?: Uint8Array): Promise<{ reply: Reply; payload: Buffer }> {
    if (this.broken) return Promise.reject(this.broken);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, {
        resolve: ({ reply, payload: p }) => (reply.ok ? resolve({ reply, payload: p }) : reject(new DistError(`store at ${this.where}: ${reply.error ?? "request failed"}`))),
        reject,
      });
      this.socket.write(frame({ ...req, id }, payload));
    });
  }

  async set(key: string, value: Uint8Array): Promise<void> {
    await this.request({ op: "set", key }, value);
  }

  /** The value of key, waiting for another rank to set it (up to timeoutMs). */
  async get(key: string, timeoutMs = this.timeoutMs): Promise<Buffer> {
    return (await this.request({ op: "get", key, timeoutMs })).payload;
  }

  /** Adds delta to an integer counter (missing = 0) and returns the new value. */
  async add(key: string, delta: number): Promise<number> {
    return (await this.request({ op: "add", key, delta })).reply.value!;
  }

  async delete(key: string): Promise<void> {
    await this.request({ op: "delete", key });
  }

  /** Drops the connection without a goodbye: the server tells the other ranks this one is gone. */
  abort(): void {
    this.broken ??= new DistError("the store connection was aborted");
    this.socket.destroy();
  }

  /** Says goodbye (so the server does not take the closing connection for a crash) and closes. */
  async close(): Promise<void> {
    if (!this.broken) await this.request({ op: "bye" }).catch(() => undefined);
    this.broken ??= new DistError("the store connection was closed");
    this.socket.end();
  }
}
