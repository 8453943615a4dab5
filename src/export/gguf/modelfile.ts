/**
 * An Ollama Modelfile beside the GGUF files. Ollama's templates are Go templates, not Jinja, so
 * the Mistral instruct format (`[SYSTEM_PROMPT]…[/SYSTEM_PROMPT][INST]…[/INST]answer</s>`, as the
 * Ministral 3 chat template renders it) is restated here. BOS is not in the template: the GGUF
 * says add_bos_token, and the runtime adds it.
 *
 * Untested against a real Ollama (none can be installed where splint is developed); see the README.
 */

export interface ModelfileOptions {
  readonly textFile: string;
  readonly mmprojFile: string;
  readonly eosToken: string;
  readonly contextLength: number;
}

export function ollamaModelfile(o: ModelfileOptions): string {
  return `# Ollama Modelfile written by splint export. Create the model with:
#   ollama create my-model -f Modelfile
# Text chat uses ${o.textFile}. Images need the vision projector ${o.mmprojFile}, which
# llama.cpp loads with --mmproj (llama-mtmd-cli, llama-server); whether your Ollama version
# accepts a separate projector for the mistral3 architecture is not verified by splint.
FROM ./${o.textFile}

TEMPLATE """{{- if .System }}[SYSTEM_PROMPT]{{ .System }}[/SYSTEM_PROMPT]{{ end }}
{{- range $i, $m := .Messages }}
{{- if eq $m.Role "user" }}[INST]{{ $m.Content }}[/INST]
{{- else if eq $m.Role "assistant" }}{{ $m.Content }}${o.eosToken}
{{- end }}
{{- end }}"""

PARAMETER stop "${o.eosToken}"
PARAMETER stop "[INST]"
PARAMETER temperature 0.15
PARAMETER num_ctx ${Math.min(o.contextLength, 8192)}
`;
}
