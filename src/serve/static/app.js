// The classify page: pick or drop an X-ray, see each chosen model's class and probabilities
// (before/after when the server has an adapter), and chat with a model, streamed.
import { api, ApiError, keyBox } from "/static/api.js";

const $ = (s) => document.querySelector(s);
let info = { models: [], classes: [], dashboard: false, auth: false };
let imageUrl = null;
let chatAbort = null;

function showError(message) {
  $("#error").textContent = message ?? "";
}

function option(select, id, selected) {
  const o = document.createElement("option");
  o.value = o.textContent = id;
  o.selected = selected;
  select.append(o);
}

/** One model select per column: a single column, or "before" and "after" when there are two models or more. */
function modelControls() {
  const box = $("#model-controls");
  box.replaceChildren();
  const ids = info.models.map((m) => m.id);
  const columns = ids.length >= 2 ? [["before", ids[0]], ["after", ids[ids.length - 1]]] : [["model", ids[0]]];
  for (const [role, chosen] of columns) {
    const label = document.createElement("label");
    label.textContent = `${role} `;
    const select = document.createElement("select");
    select.dataset.role = role;
    ids.forEach((id) => option(select, id, id === chosen));
    select.addEventListener("change", () => imageUrl && classify());
    label.append(select);
    box.append(label);
  }
  const chat = $("#chat-model");
  chat.replaceChildren();
  ids.forEach((id) => option(chat, id, id === ids[ids.length - 1]));
}

async function load() {
  showError("");
  try {
    info = await (await api("/api/info")).json();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      keyBox(load);
      showError("This server needs an API key: enter it at the top right.");
      return;
    }
    showError(`Cannot reach the server: ${error.message}`);
    return;
  }
  if (info.auth) keyBox(load);
  $("#dashboard-link").hidden = !info.dashboard;
  if (info.models.length === 0) {
    showError("This server has no model loaded.");
    return;
  }
  modelControls();
}

function renderResult(column, role, modelId, result) {
  column.replaceChildren();
  const h = document.createElement("h3");
  h.textContent = `${role} · ${modelId}`;
  const predicted = document.createElement("div");
  predicted.className = "predicted";
  column.append(h, predicted);
  if (result instanceof Error) {
    predicted.className = "error";
    predicted.textContent = result.message;
    return;
  }
  predicted.textContent = result.class;
  const entries = Object.entries(result.probabilities).sort((a, b) => b[1] - a[1]);
  for (const [name, p] of entries) {
    const row = document.createElement("div");
    row.className = name === result.class ? "bar top" : "bar";
    row.dataset.class = name;
    row.dataset.p = String(p);
    row.innerHTML = `<span class="name"></span><span class="track"><span class="fill"></span></span><span class="p"></span>`;
    row.querySelector(".name").textContent = name;
    row.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    row.querySelector(".p").textContent = `${(100 * p).toFixed(1)}%`;
    column.append(row);
  }
  if (result.temperature !== 1) {
    const note = document.createElement("p");
    note.className = "muted";
    note.textContent = `calibrated: temperature ${result.temperature.toFixed(3)}`;
    column.append(note);
  }
}

async function classify() {
  showError("");
  const results = $("#results");
  results.replaceChildren();
  const selects = [...document.querySelectorAll("#model-controls select")];
  await Promise.all(
    selects.map(async (select) => {
      const column = document.createElement("div");
      column.className = "result";
      column.dataset.role = select.dataset.role;
      column.dataset.model = select.value;
      column.innerHTML = `<h3></h3><div class="predicted muted">classifying…</div>`;
      results.append(column);
      let result;
      try {
        result = await (await api("/v1/classify", { model: select.value, image: imageUrl })).json();
      } catch (error) {
        result = error;
      }
      renderResult(column, select.dataset.role, select.value, result);
    }),
  );
  results.dataset.done = "true";
}

function takeFile(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) {
    showError(`${file.name} is not an image`);
    return;
  }
  const reader = new FileReader();
  reader.onload = () => {
    imageUrl = reader.result;
    const preview = $("#preview");
    preview.src = imageUrl;
    preview.classList.add("shown");
    void classify();
  };
  reader.readAsDataURL(file);
}

const drop = $("#drop");
$("#file").addEventListener("change", (e) => takeFile(e.target.files[0]));
drop.addEventListener("dragover", (e) => {
  e.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  takeFile(e.dataTransfer.files[0]);
});

/** Streams a chat answer, reading the server-sent events as they arrive. */
async function sendChat() {
  const text = $("#chat-input").value.trim();
  if (!text) return;
  const content = [{ type: "text", text }];
  if ($("#chat-image").checked && imageUrl) content.push({ type: "image_url", image_url: { url: imageUrl } });
  const out = $("#chat-output");
  out.textContent = "";
  delete out.dataset.done;
  chatAbort = new AbortController();
  $("#chat-send").disabled = true;
  $("#chat-stop").disabled = false;
  try {
    const body = { model: $("#chat-model").value, messages: [{ role: "user", content }], stream: true, max_tokens: Number($("#chat-max").value) || 64 };
    const response = await api("/v1/chat/completions", body, chatAbort.signal);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("");
        if (data === "" || data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        out.textContent += chunk.choices?.[0]?.delta?.content ?? "";
      }
    }
  } catch (error) {
    if (error.name !== "AbortError") showError(error.message);
  } finally {
    out.dataset.done = "true";
    $("#chat-send").disabled = false;
    $("#chat-stop").disabled = true;
  }
}

$("#chat-send").addEventListener("click", () => void sendChat());
$("#chat-stop").addEventListener("click", () => chatAbort?.abort());
void load();
