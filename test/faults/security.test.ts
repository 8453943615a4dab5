// Defect 11: a chat template cannot exhaust memory with range(); --revision cannot lead outside
// the Hub cache; token files that others can read (Kaggle) or write (Hugging Face) are refused.
import assert from "node:assert/strict";
import { chmod, mkdir, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { resolveKaggleCredentials } from "../../src/data/kaggle.ts";
import { RepoCache } from "../../src/hub/cache.ts";
import { hubSettings } from "../../src/hub/settings.ts";
import { checkRevision, downloadSnapshot } from "../../src/hub/snapshot.ts";
import { compileChatTemplate } from "../../src/text/chat-template.ts";
import { EXIT, InputError } from "../../src/util/errors.ts";
import { withTempDir } from "../helpers/temp-dir.ts";
import { runSplintAsync } from "./helpers/cli.ts";

const render = (text: string) => compileChatTemplate("evil", "evil.jinja", text).render({ messages: [], addGenerationPrompt: true, bosToken: "<s>", eosToken: "</s>", extra: {} });

test("a chat template with range(1000000000) is refused quickly, naming the file; normal ranges still work", () => {
  const started = performance.now();
  assert.throws(() => render("{% for i in range(1000000000) %}x{% endfor %}"), (e) => e instanceof InputError && /^evil\.jinja: chat template asks range\(\) for 1000000000 items/.test(e.message));
  // Nested loops share one budget per render.
  assert.throws(() => render("{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}"), /more than 100000 in one render/);
  assert.ok(performance.now() - started < 5000);
  assert.equal(render("{% for i in range(3) %}{{ i }}{% endfor %}|{% for i in range(1, 7, 2) %}{{ i }}{% endfor %}|{{ range(5, 0, -2) | join(',') }}"), "012|135|5,3,1");
  assert.match(render("{{ strftime_now('%Y') }}"), /^\d{4}$/);
  assert.throws(() => render("{{ raise_exception('no system role') }}"), (e) => e instanceof InputError && /no system role/.test(e.message));
});

test("--revision with .. or other non-ref text is refused before any request; the cache never resolves outside refs/", async () => {
  for (const bad of ["../../x", "main/../../x", "/etc/passwd", "a\\b", "", ".hidden", "x..y", "a//b"]) {
    assert.throws(() => checkRevision(bad), (e) => e instanceof InputError && e.file === "--revision", bad);
  }
  for (const good of ["main", "v1.0", "refs/pr/1", "feature/x-y_z", "0123456789abcdef0123456789abcdef01234567"]) checkRevision(good);
  await withTempDir("splint-faults-sec-", async (dir) => {
    // The cache sits three levels down, so a path that escaped it (refs/../../x leads two levels
    // up) would still land inside this test's own folder, where the listing below sees it.
    const cacheDir = join(dir, "a", "b", "hub");
    await mkdir(cacheDir, { recursive: true });
    await assert.rejects(downloadSnapshot("owner/model", { revision: "../../x", settings: { endpoint: "http://127.0.0.1:9", cacheDir, offline: false, token: undefined } }), (e) => e instanceof InputError && /--revision/.test(e.message));
    const cache = new RepoCache(cacheDir, "owner/model");
    await assert.rejects(cache.writeRef("../../../escaped", "0".repeat(40)), InputError);
    const untouched = ["a", join("a", "b"), join("a", "b", "hub")];
    assert.deepEqual((await readdir(dir, { recursive: true })).sort(), untouched, "nothing was written anywhere");
    const run = await runSplintAsync(["model", "download", "owner/model", "--revision", "../../x"], { env: { HF_HUB_CACHE: cacheDir, HF_ENDPOINT: "http://127.0.0.1:9" } });
    assert.equal(run.status, EXIT.usage, run.stderr);
    assert.match(run.stderr, /--revision: "\.\.\/\.\.\/x" is not a branch, tag or commit name/);
    assert.deepEqual((await readdir(dir, { recursive: true })).sort(), untouched, "the CLI wrote nothing either");
  });
});

test("token files: Kaggle ones readable by others and a Hugging Face one writable by others are refused, without printing the token", async () => {
  await withTempDir("splint-faults-sec-", async (home) => {
    const secret = "kgat_SUPERSECRET";
    const tokenFile = join(home, "kaggle-token");
    await writeFile(tokenFile, secret);
    await chmod(tokenFile, 0o644);
    await assert.rejects(resolveKaggleCredentials({ KAGGLE_API_TOKEN: tokenFile }, home), (e) => e instanceof InputError && /readable by other users \(mode 644\)/.test(e.message) && !e.message.includes(secret) && /chmod 600/.test(e.hint ?? ""));
    await chmod(tokenFile, 0o600);
    assert.equal((await resolveKaggleCredentials({ KAGGLE_API_TOKEN: tokenFile }, home)).authorization, `Bearer ${secret}`);

    await mkdir(join(home, ".kaggle"));
    const access = join(home, ".kaggle", "access_token");
    await writeFile(access, secret);
    await chmod(access, 0o640);
    await assert.rejects(resolveKaggleCredentials({}, home), (e) => e instanceof InputError && e.file === access);

    const hfHome = join(home, "hf");
    await mkdir(hfHome);
    const hfToken = join(hfHome, "token");
    await writeFile(hfToken, "hf_SECRET");
    await chmod(hfToken, 0o644);
    assert.equal(hubSettings({ HF_HOME: hfHome }).token, "hf_SECRET", "0644, as `hf auth login` writes it, is accepted");
    await chmod(hfToken, 0o666);
    assert.throws(() => hubSettings({ HF_HOME: hfHome }), (e) => e instanceof InputError && /writable by other users/.test(e.message) && !e.message.includes("hf_SECRET"));
  });
});
