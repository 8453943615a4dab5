/**
 * The wording of --model / --adapter / --revision, shared so every command that takes a model says
 * the same thing: each value is a local folder or a Hub id, resolved by src/hub/resolve.ts.
 */
export const MODEL_FLAG = "--model <dir|id>";
export const MODEL_HELP = "model folder (Hugging Face layout) or Hub id owner/name[@revision]";
export const ADAPTER_FLAG = "--adapter <dir|id>";
export const ADAPTER_HELP = "PEFT LoRA adapter folder or Hub id owner/name[@revision]";
export const REVISION_FLAG = "--revision <rev>";
export const REVISION_HELP = "Hub branch, tag or commit of --model when it is a Hub id (default main)";

/** The download option a --revision flag gives, absent when the flag is. */
export function revisionOption(revision: string | undefined): { revision?: string } {
  return revision === undefined ? {} : { revision };
}
