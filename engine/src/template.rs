//! Which chat template formats a conversation for a model.
//!
//! llama.cpp applies templates itself (`llama_chat_apply_template`): either one of its built-in
//! formats by name, or the Jinja template from the GGUF (`tokenizer.chat_template`), which it
//! recognises by its markers. Ollama stores a Go template in a separate layer instead; we do not
//! run Go templates, we recognise which built-in format one describes. This module decides the
//! order in which to try them; the engine keeps the first that llama.cpp accepts.

/// One way to format a chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateSource {
    /// A llama.cpp built-in template, by name (`gemma`, `chatml`, `llama3`, ...).
    Builtin(String),
    /// The model's own template from its GGUF metadata.
    Gguf,
}

/// llama.cpp built-in names the operator may put in a template layer directly.
const BUILTINS: &[&str] = &[
    "chatml", "llama2", "llama2-sys", "mistral-v1", "mistral-v3", "mistral-v7", "phi3", "phi4",
    "falcon3", "zephyr", "monarch", "gemma", "orion", "openchat", "vicuna", "deepseek", "deepseek2",
    "deepseek3", "command-r", "llama3", "chatglm4", "minicpm", "exaone3", "granite", "gigachat",
    "megrez", "llama4", "smolvlm", "hunyuan-moe", "kimi-k2", "seed_oss",
];

/// Markers that identify the format an Ollama Go template (or any template text) produces.
const MARKERS: &[(&str, &str)] = &[
    ("<start_of_turn>", "gemma"),
    ("<|start_header_id|>", "llama3"),
    ("<|im_start|>", "chatml"),
    ("[INST]", "llama2"),
    ("<|user|>", "zephyr"),
];

/// The templates to try, best first.
///
/// `layer`: the store's template layer; `has_gguf_template`: whether the GGUF carries one;
/// `architecture`: `general.architecture`. An empty list means the model cannot chat (raw
/// generation still works).
pub fn candidates(layer: Option<&str>, has_gguf_template: bool, architecture: &str) -> Vec<TemplateSource> {
    let mut out = Vec::new();
    let mut push = |t: TemplateSource| {
        if !out.contains(&t) {
            out.push(t);
        }
    };
    let layer = layer.map(str::trim).filter(|l| !l.is_empty());
    // An explicit built-in name in the layer is the operator's choice: it wins.
    if let Some(name) = layer.filter(|l| BUILTINS.contains(l)) {
        push(TemplateSource::Builtin(name.to_owned()));
    }
    if has_gguf_template {
        push(TemplateSource::Gguf);
    }
    if let Some(text) = layer {
        for (marker, name) in MARKERS {
            if text.contains(marker) {
                push(TemplateSource::Builtin((*name).to_owned()));
                break;
            }
        }
    }
    // Gemma GGUFs (the 270M base model among them) ship without a template; the format is
    // fixed for the family.
    if architecture.starts_with("gemma") {
        push(TemplateSource::Builtin("gemma".to_owned()));
    }
    out
}

/// Ollama's template for a model without one: the prompt as it is.
pub const BARE_PROMPT: &str = "{{ .Prompt }}";

/// The template `/api/show` reports: the store's template layer when there is one (Ollama's Go
/// template, what Ollama clients expect); else the GGUF's own (Jinja) template, which is then
/// what formats the chat; else the llama.cpp built-in the family gets; else the bare prompt.
pub fn shown(layer: Option<&str>, gguf_template: Option<&str>, architecture: &str) -> String {
    if let Some(layer) = layer.filter(|l| !l.trim().is_empty()) {
        return layer.to_owned();
    }
    if let Some(gguf) = gguf_template.filter(|t| !t.trim().is_empty()) {
        return gguf.to_owned();
    }
    match candidates(None, false, architecture).into_iter().next() {
        Some(TemplateSource::Builtin(name)) => name,
        Some(TemplateSource::Gguf) | None => BARE_PROMPT.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::TemplateSource::*;
    use super::*;

    fn b(n: &str) -> TemplateSource {
        Builtin(n.to_owned())
    }

    #[test]
    fn choices() {
        let ollama_gemma = include_str!("../../models-bundle/templates/gemma3.gotmpl");
        let cases: Vec<(Option<&str>, bool, &str, Vec<TemplateSource>)> = vec![
            // Gemma 3 270M base as our importer stores it: Go template layer, no GGUF template.
            (Some(ollama_gemma), false, "gemma3", vec![b("gemma")]),
            // No layer and no GGUF template: the architecture decides.
            (None, false, "gemma3", vec![b("gemma")]),
            // SmolLM2: the GGUF's own template.
            (None, true, "llama", vec![Gguf]),
            // Pulled by Ollama: both; the GGUF template first, the layer's format as fallback.
            (Some("{{ if .System }}<|im_start|>system"), true, "qwen2", vec![Gguf, b("chatml")]),
            (Some("<|start_header_id|>user"), false, "llama", vec![b("llama3")]),
            // An explicit built-in name overrides the GGUF.
            (Some("chatml"), true, "llama", vec![b("chatml"), Gguf]),
            (Some("  "), false, "llama", vec![]),
            (Some("{{ .Prompt }}"), false, "bert", vec![]),
        ];
        for (layer, gguf, arch, want) in cases {
            assert_eq!(candidates(layer, gguf, arch), want, "layer {layer:?} gguf {gguf} arch {arch}");
        }
    }

    #[test]
    fn shown_template() {
        let chatml = "{% for message in messages %}<|im_start|>{{ message['role'] }}";
        // SmolLM2 as imported: no template layer, its GGUF carries ChatML.
        assert_eq!(shown(None, Some(chatml), "llama"), chatml);
        assert_eq!(shown(Some(""), Some(chatml), "llama"), chatml);
        // A layer is what Ollama shows, even beside a GGUF template.
        assert_eq!(shown(Some("{{ .Prompt }}<|im_end|>"), Some(chatml), "qwen2"), "{{ .Prompt }}<|im_end|>");
        assert_eq!(shown(None, None, "gemma3"), "gemma");
        assert_eq!(shown(None, Some("  "), "bert"), BARE_PROMPT);
    }
}
