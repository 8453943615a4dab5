import { createHash, randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/**
 * A local stand-in for huggingface.co speaking the endpoints splint uses, with the Hub's headers
 * (X-Repo-Commit, ETag / X-Linked-Etag / X-Linked-Size, X-Error-Code) and LFS files redirected to a
 * separate "CDN" server on another port (another origin, as on the real Hub). Faults can be armed
 * per file: a dropped connection after N bytes, or corrupted bytes.
 */

export interface MockFile {
  readonly content: Buffer;
  readonly lfs: boolean;
}

export interface MockRepo {
  commit: string;
  files: Map<string, MockFile>;
  /** Token needed to read it (private/gated repo); undefined for public. */
  readToken?: string;
  /** Gated: valid tokens that have not accepted the conditions get 403 GatedRepo. */
  gatedExcept?: string;
  /** Listed by the API but gone from the resolve endpoint (deleted between the two calls). */
  ghosts?: Set<string>;
  /** Branch or tag names besides main; each points at the current commit (the mock keeps one). */
  refs?: Set<string>;
}

export interface LoggedRequest {
  readonly server: "hub" | "cdn";
  readonly method: string;
  readonly url: string;
  readonly range: string | undefined;
  readonly authorization: string | undefined;
}

export const sha256 = (b: Buffer): string => createHash("sha256").update(b).digest("hex");
export const gitBlobId = (b: Buffer): string => createHash("sha1").update(`blob ${b.byteLength}\0`).update(b).digest("hex");
const newCommit = (): string => randomBytes(20).toString("hex");

export class MockHub {
  readonly repos = new Map<string, MockRepo>();
  readonly log: LoggedRequest[] = [];
  /** sha256 → bytes after which the next CDN response for it is cut (one shot). */
  readonly cutAfter = new Map<string, number>();
  /** sha256s for which the CDN ignores Range and sends the whole file with 200. */
  readonly ignoreRange = new Set<string>();
  /** sha256s whose CDN bytes are served corrupted. */
  readonly corrupt = new Set<string>();
  /** Token allowed to create repos and commit. */
  writeToken = "hf_write";
  /** Old repo id → new one: requests under the old id get a relative 307, as after a rename. */
  readonly renamed = new Map<string, string>();
  /** Tokens the mock knows; any other is "Invalid credentials". */
  readonly validTokens = new Set(["hf_read", "hf_write"]);
  private readonly lfsStore = new Map<string, Buffer>();
  private hub!: Server;
  private cdn!: Server;
  endpoint = "";
  cdnBase = "";

  /** A model repo, or a dataset repo with the id "datasets:owner/name". */
  addRepo(id: string, files: Record<string, { content: Buffer | string; lfs?: boolean }>, readToken?: string): MockRepo {
    const repo: MockRepo = { commit: newCommit(), files: new Map(), readToken };
    for (const [path, f] of Object.entries(files)) {
      const content = Buffer.isBuffer(f.content) ? f.content : Buffer.from(f.content);
      repo.files.set(path, { content, lfs: f.lfs ?? false });
      if (f.lfs) this.lfsStore.set(sha256(content), content);
    }
    this.repos.set(id, repo);
    return repo;
  }

  async start(): Promise<void> {
    this.hub = createServer((req, res) => void this.handleHub(req, res).catch((e: Error) => fail(res, 500, e.message)));
    this.cdn = createServer((req, res) => this.handleCdn(req, res));
    await Promise.all([listen(this.hub), listen(this.cdn)]);
    this.endpoint = `http://127.0.0.1:${(this.hub.address() as AddressInfo).port}`;
    this.cdnBase = `http://127.0.0.1:${(this.cdn.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    for (const s of [this.hub, this.cdn]) {
      s.closeAllConnections();
      await new Promise((r) => s.close(r));
    }
  }

  requests(server: "hub" | "cdn", method?: string): LoggedRequest[] {
    return this.log.filter((r) => r.server === server && (!method || r.method === method));
  }

  private record(server: "hub" | "cdn", req: IncomingMessage): void {
    this.log.push({ server, method: req.method ?? "", url: req.url ?? "", range: req.headers.range, authorization: req.headers.authorization });
  }

  private async handleHub(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.record("hub", req);
    const url = new URL(req.url ?? "/", this.endpoint);
    // Dataset repos live in `repos` under "datasets:owner/name"; their API and resolve paths are
    // rewritten onto the model routes, which then capture that key as the repo id.
    const path = decodeURIComponent(url.pathname)
      .replace(/^\/api\/datasets\/([^/]+)\//, "/api/models/datasets:$1/")
      .replace(/^\/datasets\/([^/]+)\//, "/datasets:$1/");
    const token = req.headers.authorization?.replace(/^Bearer /, "");
    let m: RegExpMatchArray | null;
    for (const [from, to] of this.renamed) {
      for (const prefix of [`/api/models/${from}/`, `/${from}/resolve/`]) {
        if (path.startsWith(prefix)) {
          res.writeHead(307, { location: `${prefix.replace(from, to)}${path.slice(prefix.length)}${url.search}` });
          return void res.end();
        }
      }
    }

    if ((m = path.match(/^\/api\/models\/([^/]+\/[^/]+)\/tree\/([^/]+)$/)) && req.method === "GET") {
      // The tree API @huggingface/hub's listFiles reads; one page (the real Hub paginates with Link).
      const repo = this.readable(m[1] as string, token, res);
      if (!repo) return;
      if (m[2] !== "main" && m[2] !== repo.commit && !repo.refs?.has(m[2] as string)) return fail(res, 404, "Invalid rev id", "RevisionNotFound");
      const listed = [...repo.files, ...[...(repo.ghosts ?? [])].map((g) => [g, { content: Buffer.from(g), lfs: false }] as const)];
      const dirs = new Set(listed.flatMap(([p]) => p.split("/").slice(0, -1).map((_, i, parts) => parts.slice(0, i + 1).join("/"))));
      return json(res, 200, [
        ...[...dirs].map((d) => ({ type: "directory", path: d, size: 0, oid: randomBytes(20).toString("hex") })),
        ...listed.map(([path, f]) => ({
          type: "file",
          path,
          size: f.content.byteLength,
          oid: f.lfs ? gitBlobId(Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${sha256(f.content)}\n`)) : gitBlobId(f.content),
          ...(f.lfs ? { lfs: { oid: sha256(f.content), size: f.content.byteLength, pointerSize: 134 } } : {}),
        })),
      ]);
    }
    if ((m = path.match(/^\/api\/models\/([^/]+\/[^/]+)\/revision\/(.+)$/)) && req.method === "GET") {
      const repo = this.readable(m[1] as string, token, res);
      if (!repo) return;
      if (m[2] !== "main" && m[2] !== repo.commit && !repo.refs?.has(m[2] as string)) return fail(res, 404, "Invalid rev id", "RevisionNotFound");
      const listed = [...repo.files, ...[...(repo.ghosts ?? [])].map((g) => [g, { content: Buffer.from(g), lfs: false }] as const)];
      const siblings = listed.map(([rfilename, f]) => ({
        rfilename,
        size: f.content.byteLength,
        blobId: f.lfs ? randomBytes(20).toString("hex") : gitBlobId(f.content),
        ...(f.lfs ? { lfs: { sha256: sha256(f.content), size: f.content.byteLength, pointerSize: 134 } } : {}),
      }));
      return json(res, 200, { id: m[1], sha: repo.commit, siblings });
    }
    if ((m = path.match(/^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/)) && (req.method === "HEAD" || req.method === "GET")) {
      const repo = this.readable(m[1] as string, token, res);
      if (!repo) return;
      if (m[2] !== "main" && m[2] !== repo.commit) return fail(res, 404, "Invalid rev id", "RevisionNotFound");
      const file = repo.files.get(m[3] as string);
      if (!file) return fail(res, 404, "Entry not found", "EntryNotFound");
      const headers: Record<string, string> = { "x-repo-commit": repo.commit };
      if (file.lfs) {
        const oid = sha256(file.content);
        res.writeHead(302, {
          ...headers,
          location: `${this.cdnBase}/lfs/${oid}`,
          "x-linked-etag": `"${oid}"`,
          "x-linked-size": String(file.content.byteLength),
          etag: `"${gitBlobId(Buffer.from("pointer"))}"`,
        });
        return void res.end();
      }
      res.writeHead(200, { ...headers, etag: `"${gitBlobId(file.content)}"`, "content-length": String(file.content.byteLength) });
      return void res.end(req.method === "GET" ? file.content : undefined);
    }
    if (path === "/api/repos/create" && req.method === "POST") {
      if (token !== this.writeToken) return fail(res, 401, "Invalid credentials in Authorization header");
      const body = JSON.parse((await readBody(req)).toString()) as { name: string; organization: string; visibility?: string };
      const id = `${body.organization}/${body.name}`;
      if (this.repos.has(id)) return json(res, 409, { error: "You already created this model repo", url: `${this.endpoint}/${id}` });
      this.repos.set(id, { commit: newCommit(), files: new Map(), readToken: body.visibility === "private" ? this.writeToken : undefined });
      return json(res, 200, { url: `${this.endpoint}/${id}`, name: id, id: "abc" });
    }
    if ((m = path.match(/^\/api\/models\/([^/]+\/[^/]+)\/preupload\/main$/)) && req.method === "POST") {
      if (token !== this.writeToken) return fail(res, 401, "Invalid credentials in Authorization header");
      const body = JSON.parse((await readBody(req)).toString()) as { files: { path: string; size: number }[] };
      return json(res, 200, { files: body.files.map((f) => ({ path: f.path, uploadMode: f.path.endsWith(".safetensors") ? "lfs" : "regular", shouldIgnore: false })) });
    }
    if ((m = path.match(/^\/([^/]+\/[^/]+)\.git\/info\/lfs\/objects\/batch$/)) && req.method === "POST") {
      if (token !== this.writeToken) return fail(res, 401, "Invalid credentials in Authorization header");
      const body = JSON.parse((await readBody(req)).toString()) as { objects: { oid: string; size: number }[] };
      return json(res, 200, {
        transfer: "basic",
        objects: body.objects.map((o) => ({ oid: o.oid, size: o.size, actions: { upload: { href: `${this.cdnBase}/upload/${o.oid}` } } })),
      });
    }
    if ((m = path.match(/^\/api\/models\/([^/]+\/[^/]+)\/commit\/main$/)) && req.method === "POST") {
      if (token !== this.writeToken) return fail(res, 401, "Invalid credentials in Authorization header");
      const repo = this.repos.get(m[1] as string);
      if (!repo) return fail(res, 404, "Repository not found", "RepoNotFound");
      const lines = (await readBody(req)).toString().split("\n").filter(Boolean).map((l) => JSON.parse(l) as { key: string; value: Record<string, string> });
      for (const { key, value } of lines) {
        if (key === "file") repo.files.set(value.path as string, { content: Buffer.from(value.content as string, "base64"), lfs: false });
        if (key === "lfsFile") {
          const content = this.lfsStore.get(value.oid as string);
          if (!content) return fail(res, 422, `LFS object ${value.oid} was never uploaded`);
          repo.files.set(value.path as string, { content, lfs: true });
        }
      }
      repo.commit = newCommit();
      return json(res, 200, { commitOid: repo.commit, commitUrl: `${this.endpoint}/${m[1]}/commit/${repo.commit}` });
    }
    fail(res, 404, `mock hub: no route for ${req.method} ${path}`);
  }

  private readable(id: string, token: string | undefined, res: ServerResponse): MockRepo | undefined {
    const repo = this.repos.get(id);
    if (token !== undefined && !this.validTokens.has(token)) {
      fail(res, 401, "Invalid credentials in Authorization header");
      return undefined;
    }
    // Like the Hub: without a token a missing and a private repo look the same (401).
    if (!repo || (repo.readToken !== undefined && token !== repo.readToken)) {
      fail(res, token ? 404 : 401, "Repository not found", "RepoNotFound");
      return undefined;
    }
    if (repo.gatedExcept !== undefined && token !== repo.gatedExcept) {
      fail(res, token ? 403 : 401, `Access to model ${id} is restricted and you are not in the authorized list.`, "GatedRepo");
      return undefined;
    }
    return repo;
  }

  private handleCdn(req: IncomingMessage, res: ServerResponse): void {
    this.record("cdn", req);
    const path = req.url ?? "";
    if (req.method === "PUT" && path.startsWith("/upload/")) {
      void readBody(req).then((body) => {
        const oid = path.slice("/upload/".length);
        if (sha256(body) !== oid) return fail(res, 400, "sha256 of the body does not match the oid");
        this.lfsStore.set(oid, body);
        res.writeHead(200, { etag: `"${oid}"` }).end();
      });
      return;
    }
    const oid = path.replace(/^\/lfs\//, "");
    const stored = this.lfsStore.get(oid);
    if (!stored) return fail(res, 404, "no such object");
    let content = stored;
    if (this.corrupt.has(oid)) {
      content = Buffer.from(stored);
      content[content.length >> 1] ^= 0xff;
    }
    const match = this.ignoreRange.has(oid) ? null : req.headers.range?.match(/^bytes=(\d+)-$/);
    const start = match ? Number(match[1]) : 0;
    if (start >= content.byteLength && start > 0) return void res.writeHead(416, { "content-range": `bytes */${content.byteLength}` }).end();
    const body = content.subarray(start);
    res.writeHead(match ? 206 : 200, {
      "content-length": String(body.byteLength),
      "accept-ranges": "bytes",
      ...(match ? { "content-range": `bytes ${start}-${content.byteLength - 1}/${content.byteLength}` } : {}),
    });
    const cut = this.cutAfter.get(oid);
    if (cut !== undefined && cut < body.byteLength) {
      this.cutAfter.delete(oid);
      res.write(body.subarray(0, cut), () => setTimeout(() => res.socket?.destroy(), 20));
      return;
    }
    res.end(body);
  }
}

function listen(server: Server): Promise<void> {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
}

function fail(res: ServerResponse, status: number, message: string, code?: string): void {
  if (res.headersSent) return void res.destroy();
  res.writeHead(status, { "content-type": "application/json", "x-error-message": message, ...(code ? { "x-error-code": code } : {}) });
  res.end(JSON.stringify({ error: message }));
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}
