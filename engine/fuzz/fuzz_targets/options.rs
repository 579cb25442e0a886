//! Generation options: a model's params layer (from the store) overlaid with a request's
//! `options` (from the client). Input: params JSON, a newline, options JSON. Properties: no
//! panic; what is accepted is within the ranges the worker relies on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use wardbox_engine::options::resolve;

fuzz_target!(|data: &[u8]| {
    let (params, options) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"{}"[..], data),
    };
    let Ok(Value::Object(params)) = serde_json::from_slice::<Value>(params) else { return };
    let options: Option<Value> = serde_json::from_slice(options).ok();
    if let Ok(o) = resolve(&params, options.as_ref()) {
        assert!(o.temperature.is_finite() && o.temperature >= 0.0, "{o:?}");
        assert!((0.0..=1.0).contains(&o.top_p) && (0.0..=1.0).contains(&o.min_p), "{o:?}");
        assert!(o.repeat_penalty.is_finite() && o.repeat_penalty > 0.0, "{o:?}");
        assert!(o.repeat_last_n >= -1, "{o:?}");
        assert!(o.num_ctx.is_none_or(|n| n > 0), "{o:?}");
    }
});
