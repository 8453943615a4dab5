import { randomBytes } from "node:crypto";
import { mkdir, readFile, rename, stat, symlink, unlink, writeFile } from "node:fs/promises";
import { dirname, isAbsolute, join, relative } from "node:path";
import { InputError } from "../util/errors.ts";

/**
 * The cache layout Python's huggingface_hub uses, so both tools share one cache:
 *
 *   <cacheDir>/models--owner--name/
 *     blobs/<etag>                      file contents, named by sha256 (LFS) or git blob sha1
 *     blobs/<etag>.incomplete           a download in progress (resumed from its length)
 *     snapshots/<commit>/<path>         relative symlinks into blobs/
 *     refs/<revision>                   the commit a branch or tag pointed to when last resolved
 */
export class RepoCache {
  readonly root: string;

  constructor(
    cacheDir: string,
    readonly repo: string,
  ) {
    this.root = join(cacheDir, `models--${repo.split("/").join("--")}`);
  }

  blobPath(etag: string): string {
    return join(this.root, "blobs", etag);
  }

  incompletePath(etag: string): string {
    return `${this.blobPath(etag)}.incomplete`;
  }

  snapshotDir(commit: string): string {
    return join(this.root, "snapshots", commit);
  }

  snapshotPath(commit: string, file: string): string {
    return join(this.snapshotDir(commit), ...file.split("/"));
  }

  /** refs/<revision>, refused when the revision would lead outside the repo's refs folder. */
  refPath(revision: string): string {
    const refs = join(this.root, "refs");
    const path = join(refs, ...revision.split("/"));
    const inside = relative(refs, path);
    if (inside === "" || inside.startsWith("..") || isAbsolute(inside)) {
      throw new InputError("--revision", `${JSON.stringify(revision)} would lead outside the Hub cache's refs folder`);
    }
    return path;
  }

  async readRef(revision: string): Promise<string | undefined> {
    const path = this.refPath(revision);
    try {
      const commit = (await readFile(path, "utf8")).trim();
      return /^[0-9a-f]{40}$/.test(commit) ? commit : undefined;
    } catch {
      return undefined;
    }
  }

  async writeRef(revision: string, commit: string): Promise<void> {
    const path = this.refPath(revision);
    if ((await this.readRef(revision)) === commit) return;
    await mkdir(dirname(path), { recursive: true });
    const temp = `${path}.${process.pid}-${randomBytes(4).toString("hex")}.tmp`;
    await writeFile(temp, commit);
    await rename(temp, path);
  }

  /** True when the snapshot entry exists and points at a blob that exists. */
  async hasSnapshotFile(commit: string, file: string): Promise<boolean> {
    try {
      return (await stat(this.snapshotPath(commit, file))).isFile();
    } catch {
      return false;
    }
  }

  async hasBlob(etag: string): Promise<boolean> {
    try {
      return (await stat(this.blobPath(etag))).isFile();
    } catch {
      return false;
    }
  }

  /** Points snapshots/<commit>/<file> at blobs/<etag> with a relative link, as Python does. */
  async linkSnapshotFile(commit: string, file: string, etag: string): Promise<void> {
    const pointer = this.snapshotPath(commit, file);
    await mkdir(dirname(pointer), { recursive: true });
    await unlink(pointer).catch(() => undefined);
    await symlink(relative(dirname(pointer), this.blobPath(etag)), pointer);
  }
}
