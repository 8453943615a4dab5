// The pages' one way to call the server: adds the API key when one is stored, and turns the
// OpenAI error JSON into an Error with the server's message.
const KEY = "splint-api-key";

export function apiKey() {
  return localStorage.getItem(KEY) ?? "";
}

export function setApiKey(key) {
  if (key) localStorage.setItem(KEY, key);
  else localStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export async function api(path, body, signal) {
  const headers = { "content-type": "application/json" };
  const key = apiKey();
  if (key) headers.authorization = `Bearer ${key}`;
  const response = await fetch(path, body === undefined ? { headers, signal } : { method: "POST", headers, body: JSON.stringify(body), signal });
  if (!response.ok) {
    let message = `HTTP ${response.status}`;
    try {
      message = (await response.json()).error?.message ?? message;
    } catch {
      // not JSON: keep the status
    }
    throw new ApiError(response.status, message);
  }
  return response;
}

/** A key box in the header, shown when the server wants a key (or the stored one is wrong). */
export function keyBox(onChange) {
  const box = document.querySelector("#key");
  const input = box.querySelector("input");
  input.value = apiKey();
  box.hidden = false;
  input.addEventListener("change", () => {
    setApiKey(input.value.trim());
    onChange();
  });
}
