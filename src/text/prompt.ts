/**
 * The tutorial's strict classification prompt and its one-image conversations (tutorial §5).
 */

export interface TextBlock {
  type: "text";
  text: string;
}
export interface ImageBlock {
  type: "image";
}
export type ContentBlock = TextBlock | ImageBlock;

export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string | ContentBlock[];
}

// Python's str.isspace() set, so strip() below trims exactly what the tutorial's .strip() trims.
const PY_WHITESPACE = /^[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+|[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+$/g;

function pyStrip(s: string): string {
  return s.replace(PY_WHITESPACE, "");
}

/** The tutorial's f-string PROMPT, character for character, for the given class names. */
export function buildPrompt(classNames: readonly string[]): string {
  const classes = classNames.join(", ");
  return pyStrip(`
You are a radiology assistant specialised in bone fracture classification.
You must classify the X-ray image into exactly ONE of the following classes:
${classes}
Rules:
- Reply with ONLY the class name.
- No explanations, no extra words, no markdown, no punctuation.
- Output must be EXACTLY one of: ${classes}
`);
}

/** Where a prompt template puts the class names (joined by ", "). */
export const CLASSES_PLACEHOLDER = "{classes}";

/**
 * The user turn's text for a prompt template (config `prompt`): every "{classes}" replaced by the
 * class names joined by ", "; null gives the tutorial's prompt.
 */
export function renderPrompt(template: string | null, classNames: readonly string[]): string {
  if (template === null) return buildPrompt(classNames);
  return template.split(CLASSES_PLACEHOLDER).join(classNames.join(", "));
}

/**
 * The tutorial's `convert_to_conversation`: a user turn holding the prompt text then one image,
 * and, for training, an assistant turn holding the answer (the class name).
 */
export function buildConversation(prompt: string, answer?: string): ChatMessage[] {
  const messages: ChatMessage[] = [
    { role: "user", content: [{ type: "text", text: prompt }, { type: "image" }] },
  ];
  if (answer !== undefined) messages.push({ role: "assistant", content: [{ type: "text", text: answer }] });
  return messages;
}
