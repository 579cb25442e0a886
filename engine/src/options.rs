//! Generation options: the model's defaults (params layer) overlaid with a request's `options`.
//!
//! Both arrive as JSON objects with Ollama's keys. Keys we do not act on (`num_gpu`, `num_thread`,
//! `mirostat`, ...) are accepted and ignored, as Ollama ignores what a runner lacks; a key we do
//! act on with a value of the wrong type is a clear error naming the key.

use serde::Deserialize;
use serde_json::{Map, Value};

/// A request option with a value we cannot use.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OptionsError {
    /// Wrong type or out of range.
    #[error("invalid option {key}: {why}")]
    Invalid { key: &'static str, why: String },
}

#[derive(Debug, Default, Deserialize)]
struct Raw {
    temperature: Option<f32>,
    top_k: Option<i32>,
    top_p: Option<f32>,
    min_p: Option<f32>,
    num_predict: Option<i64>,
    seed: Option<i64>,
    stop: Option<Stop>,
    num_ctx: Option<i64>,
    repeat_penalty: Option<f32>,
    repeat_last_n: Option<i32>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

/// Options as the engine uses them, with Ollama's defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// 0 selects greedy decoding (deterministic whatever the seed).
    pub temperature: f32,
    pub top_k: i32,
    pub top_p: f32,
    pub min_p: f32,
    /// Maximum tokens to generate; `None` = until the end of the context.
    pub num_predict: Option<u32>,
    /// Sampling seed; `None` = random.
    pub seed: Option<u32>,
    pub stop: Vec<String>,
    /// Context window asked for; the engine caps it at its slot size.
    pub num_ctx: Option<u32>,
    pub repeat_penalty: f32,
    pub repeat_last_n: i32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
}

impl Default for Options {
    /// Ollama's documented defaults.
    fn default() -> Self {
        Options {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.9,
            min_p: 0.0,
            num_predict: None,
            seed: None,
            stop: Vec::new(),
            num_ctx: None,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
        }
    }
}

/// Merge `model_params` (the store's params layer) with `request` (the request's `options`),
/// the request winning key by key, and validate.
pub fn resolve(model_params: &Map<String, Value>, request: Option<&Value>) -> Result<Options, OptionsError> {
    let mut merged = model_params.clone();
    match request {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                // A client that sends `"seed": null` means "not set", not "set to nothing".
                if !v.is_null() {
                    merged.insert(k.clone(), v.clone());
                }
            }
        }
        Some(_) => return Err(OptionsError::Invalid { key: "options", why: "must be a JSON object".into() }),
    }
    let raw = parse(&merged)?;
    let mut o = Options::default();
    let check = |key: &'static str, ok: bool, why: &str| {
        if ok { Ok(()) } else { Err(OptionsError::Invalid { key, why: why.into() }) }
    };
    if let Some(t) = raw.temperature {
        check("temperature", t.is_finite() && t >= 0.0, "must be a number >= 0")?;
        o.temperature = t;
    }
    if let Some(k) = raw.top_k {
        o.top_k = k;
    }
    if let Some(p) = raw.top_p {
        check("top_p", (0.0..=1.0).contains(&p), "must be between 0 and 1")?;
        o.top_p = p;
    }
    if let Some(p) = raw.min_p {
        check("min_p", (0.0..=1.0).contains(&p), "must be between 0 and 1")?;
        o.min_p = p;
    }
    // Ollama: -1 = no limit (until the context is full), -2 = fill the context.
    o.num_predict = match raw.num_predict {
        None => None,
        Some(n) if n < 0 => None,
        Some(n) => Some(u32::try_from(n).map_err(|_| OptionsError::Invalid { key: "num_predict", why: "too large".into() })?),
    };
    // Negative seeds mean "random" in Ollama; larger ones are folded into llama.cpp's u32.
    o.seed = raw.seed.filter(|s| *s >= 0).map(|s| (s & 0xffff_ffff) as u32);
    o.stop = match raw.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    if let Some(n) = raw.num_ctx {
        check("num_ctx", n > 0 && n <= i64::from(u32::MAX), "must be a positive number of tokens")?;
        o.num_ctx = Some(n as u32);
    }
    if let Some(r) = raw.repeat_penalty {
        check("repeat_penalty", r.is_finite() && r > 0.0, "must be > 0 (1 disables it)")?;
        o.repeat_penalty = r;
    }
    if let Some(n) = raw.repeat_last_n {
        check("repeat_last_n", n >= -1, "must be >= -1")?;
        o.repeat_last_n = n;
    }
    if let Some(p) = raw.presence_penalty {
        o.presence_penalty = p;
    }
    if let Some(p) = raw.frequency_penalty {
        o.frequency_penalty = p;
    }
    Ok(o)
}

/// Parse key by key so the error names the offending key.
fn parse(merged: &Map<String, Value>) -> Result<Raw, OptionsError> {
    serde_json::from_value::<Raw>(Value::Object(merged.clone())).map_err(|e| {
        const KEYS: &[&str] = &[
            "temperature", "top_k", "top_p", "min_p", "num_predict", "seed", "stop", "num_ctx",
            "repeat_penalty", "repeat_last_n", "presence_penalty", "frequency_penalty",
        ];
        for key in KEYS {
            if let Some(v) = merged.get(*key) {
                let mut one = Map::new();
                one.insert((*key).to_owned(), v.clone());
                if serde_json::from_value::<Raw>(Value::Object(one)).is_err() {
                    return OptionsError::Invalid { key, why: format!("wrong type ({v})") };
                }
            }
        }
        OptionsError::Invalid { key: "options", why: e.to_string() }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test params are objects"),
        }
    }

    #[test]
    fn request_overrides_model_params() {
        let model = params(json!({"stop": ["<end_of_turn>"], "temperature": 1, "top_k": 64}));
        let o = resolve(&model, Some(&json!({"temperature": 0, "seed": 42, "num_predict": 16, "num_gpu": 99}))).expect("ok");
        assert_eq!(o.temperature, 0.0);
        assert_eq!(o.top_k, 64);
        assert_eq!(o.seed, Some(42));
        assert_eq!(o.num_predict, Some(16));
        assert_eq!(o.stop, vec!["<end_of_turn>".to_string()]);
        let o = resolve(&model, Some(&json!({"stop": "###", "num_predict": -1, "seed": null}))).expect("ok");
        assert_eq!(o.stop, vec!["###".to_string()]);
        assert_eq!(o.num_predict, None);
        assert_eq!(o.seed, None);
        assert_eq!(o.temperature, 1.0);
    }

    #[test]
    fn defaults_are_ollamas() {
        let o = resolve(&Map::new(), None).expect("ok");
        assert_eq!(o, Options::default());
        assert_eq!((o.temperature, o.top_k, o.top_p, o.repeat_penalty), (0.8, 40, 0.9, 1.1));
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            (json!({"temperature": "hot"}), "temperature"),
            (json!({"temperature": -1}), "temperature"),
            (json!({"top_p": 2}), "top_p"),
            (json!({"num_ctx": 0}), "num_ctx"),
            (json!({"stop": [1, 2]}), "stop"),
            (json!({"repeat_penalty": 0}), "repeat_penalty"),
            (json!([1]), "options"),
        ];
        for (v, key) in cases {
            match resolve(&Map::new(), Some(&v)) {
                Err(OptionsError::Invalid { key: k, .. }) => assert_eq!(k, key, "{v}"),
                other => panic!("{v}: expected an error naming {key}, got {other:?}"),
            }
        }
    }
}
