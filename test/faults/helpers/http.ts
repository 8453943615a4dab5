import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";

/**
 * Misbehaving HTTP servers on 127.0.0.1 for the network fault tests: each answers every request
 * with the same fault, and counts the requests so a test can assert that a client gave up (no
 * endless loop) or retried (resume).
 */
export interface FaultServer {
  readonly url: string;
  readonly requests: { method: string; url: string; range: string | undefined }[];
  close(): Promise<void>;
}

export type Handler = (req: IncomingMessage, res: ServerResponse, index: number) => void;

export async function faultServer(handler: Handler): Promise<FaultServer> {
  const requests: FaultServer["requests"] = [];
  const sockets = new Set<Socket>();
  const server = createServer((req, res) => {
    requests.push({ method: req.method ?? "GET", url: req.url ?? "/", range: req.headers.range });
    handler(req, res, requests.length - 1);
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    async close() {
      // Stalled responses never end by themselves: destroy their sockets.
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Headers and `sendBytes` of the body, then silence with the connection open. */
export const stallAfter =
  (body: Buffer, sendBytes: number): Handler =>
  (_req, res) => {
    res.writeHead(200, { "content-length": String(body.length) });
    res.write(body.subarray(0, sendBytes));
  };

/** Accepts the request and never answers (no headers). */
export const neverAnswer: Handler = () => {};

/** Headers, then the connection is reset after `sendBytes`. */
export const resetAfter =
  (body: Buffer, sendBytes: number): Handler =>
  (_req, res) => {
    res.writeHead(200, { "content-length": String(body.length) });
    res.write(body.subarray(0, sendBytes), () => res.socket?.destroy());
  };

/** Announces more bytes than it sends, then closes cleanly. */
export const shortBody =
  (body: Buffer, announced: number): Handler =>
  (_req, res) => {
    res.writeHead(200, { "content-length": String(announced) });
    res.end(body);
    res.socket?.end();
  };

/** Always the same status with an empty body. */
export const status =
  (code: number, headers: Record<string, string> = {}): Handler =>
  (_req, res) => {
    res.writeHead(code, headers);
    res.end();
  };
