//! `wardbox-engine bench`: prompt-eval and generation speed, time to first token, for 1 and N
//! concurrent streams through the same worker the server uses (no HTTP in the way).

use std::sync::Arc;
use std::time::{Duration, Instant};

use wardbox_models_bundle::{ModelName, Store};

use crate::options::Options;
use crate::registry::Registry;
use crate::worker::{EngineError, Event, LoadSpec, Prompt, Worker, WorkerConfig};

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub streams: usize,
    pub prompt_tokens: u64,
    pub gen_tokens: u64,
    /// Mean per-stream prompt-eval speed (a stream's prompt shares each batch with the others').
    pub prompt_tps: f64,
    /// All prompt tokens over the longest prompt-eval time: what the batch as a whole achieved.
    pub prompt_aggregate_tps: f64,
    /// Mean per-stream generation speed.
    pub gen_tps: f64,
    /// Generated tokens of all streams over the wall time.
    pub aggregate_tps: f64,
    pub ttft_mean: Duration,
    pub ttft_max: Duration,
    pub wall: Duration,
}

/// Distinct prompts so streams do not share anything.
const TOPICS: &[&str] = &[
    "the history of the printing press", "how bridges carry load", "the water cycle",
    "the life of honey bees", "how vaccines train the immune system", "the invention of the telescope",
    "why the sky is blue", "how glaciers shape valleys", "the rules of chess", "how bread rises",
    "the migration of birds", "how a steam engine works", "the structure of a cell",
    "the causes of tides", "how maps are drawn", "the growth of coral reefs",
];

fn prompt(i: usize) -> String {
    format!(
        "Write a long, detailed essay about {}. Cover its origins, the key ideas, the people involved, \
         common misconceptions, and why it still matters today. Use several paragraphs.",
        TOPICS[i % TOPICS.len()]
    )
}

/// One stream's figures: prompt tokens, prompt-eval time, generated tokens, generation time,
/// time to first token.
type StreamFigures = (u64, Duration, u64, Duration, Duration);

fn run_streams(worker: &Worker, streams: usize, tokens: u32) -> Result<Row, EngineError> {
    let started = Instant::now();
    let results: Vec<Result<StreamFigures, EngineError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..streams)
            .map(|i| {
                s.spawn(move || {
                    let options = Options {
                        temperature: 0.0,
                        num_predict: Some(tokens),
                        repeat_penalty: 1.0,
                        ..Options::default()
                    };
                    let submitted = Instant::now();
                    let mut rx = worker.generate(Prompt::Chat(vec![("user".into(), prompt(i))]), Vec::new(), options)?;
                    let mut ttft = None;
                    while let Some(ev) = rx.blocking_recv() {
                        match ev {
                            Event::Text(_) if ttft.is_none() => ttft = Some(submitted.elapsed()),
                            Event::Done(st) => {
                                return Ok((
                                    st.prompt_eval_count,
                                    st.prompt_eval_duration,
                                    st.eval_count,
                                    st.eval_duration,
                                    ttft.unwrap_or(st.prompt_eval_duration),
                                ));
                            }
                            Event::Failed(e) => return Err(e),
                            _ => {}
                        }
                    }
                    Err(EngineError::Stopped)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(Err(EngineError::Stopped))).collect()
    });
    let wall = started.elapsed();
    let results = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    let n = results.len() as f64;
    let per_sec = |count: u64, d: Duration| if d.is_zero() { 0.0 } else { count as f64 / d.as_secs_f64() };
    let gen_tokens: u64 = results.iter().map(|r| r.2).sum();
    Ok(Row {
        streams,
        prompt_tokens: results.iter().map(|r| r.0).sum(),
        gen_tokens,
        prompt_tps: results.iter().map(|r| per_sec(r.0, r.1)).sum::<f64>() / n,
        prompt_aggregate_tps: per_sec(results.iter().map(|r| r.0).sum(), results.iter().map(|r| r.1).max().unwrap_or_default()),
        gen_tps: results.iter().map(|r| per_sec(r.2, r.3)).sum::<f64>() / n,
        aggregate_tps: per_sec(gen_tokens, wall),
        ttft_mean: results.iter().map(|r| r.4).sum::<Duration>() / streams as u32,
        ttft_max: results.iter().map(|r| r.4).max().unwrap_or_default(),
        wall,
    })
}

/// Load `model` from `store` and measure each stream count in `streams`.
pub fn run(store: &Store, model: &str, streams: &[usize], tokens: u32, mut config: WorkerConfig) -> Result<Vec<Row>, EngineError> {
    let name: ModelName = Registry::parse_name(model)?;
    let resolved = store.resolve(&name).map_err(|e| EngineError::Refused { name: model.into(), why: e.to_string() })?;
    config.slots = config.slots.max(streams.iter().copied().max().unwrap_or(1) as u32);
    config.queue = config.queue.max(streams.iter().copied().max().unwrap_or(1));
    let spec = LoadSpec {
        name: model.into(),
        model_path: resolved.model_path.clone(),
        template_layer: resolved.template.clone(),
        architecture: resolved.entry.config.as_ref().map(|c| c.model_family.clone()).unwrap_or_default(),
    };
    let worker = Arc::new(Worker::spawn(spec, config)?);
    // Warm-up: the first decode pays for page faults of the mmapped weights.
    run_streams(&worker, 1, 8)?;
    streams.iter().map(|&s| run_streams(&worker, s, tokens)).collect()
}

/// The table, plus the 8-vs-1 aggregate ratio when both were measured.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str("| streams | prompt tok | gen tok | prompt-eval tok/s (per stream) | prompt-eval tok/s (aggregate) | generation tok/s (per stream) | generation tok/s (aggregate) | TTFT mean | TTFT max | wall |\n");
    out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} ms | {:.0} ms | {:.2} s |\n",
            r.streams,
            r.prompt_tokens,
            r.gen_tokens,
            r.prompt_tps,
            r.prompt_aggregate_tps,
            r.gen_tps,
            r.aggregate_tps,
            r.ttft_mean.as_secs_f64() * 1e3,
            r.ttft_max.as_secs_f64() * 1e3,
            r.wall.as_secs_f64()
        ));
    }
    let one = rows.iter().find(|r| r.streams == 1);
    if let (Some(one), Some(max)) = (one, rows.iter().max_by_key(|r| r.streams))
        && max.streams > 1
        && one.aggregate_tps > 0.0
    {
        out.push_str(&format!(
            "\naggregate generation throughput, {} streams vs 1: {:.2}x\n",
            max.streams,
            max.aggregate_tps / one.aggregate_tps
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(streams: usize, aggregate_tps: f64) -> Row {
        Row {
            streams,
            prompt_tokens: 10,
            gen_tokens: 20,
            prompt_tps: 1.0,
            prompt_aggregate_tps: 2.0,
            gen_tps: 3.0,
            aggregate_tps,
            ttft_mean: Duration::from_millis(5),
            ttft_max: Duration::from_millis(6),
            wall: Duration::from_secs(1),
        }
    }

    #[test]
    fn table_reports_the_ratio_of_n_streams_to_one() {
        let t = table(&[row(1, 10.0), row(8, 25.0)]);
        assert!(t.contains("| 8 | 10 | 20 | 1.0 | 2.0 | 3.0 | 25.0 | 5 ms | 6 ms | 1.00 s |"), "{t}");
        assert!(t.contains("8 streams vs 1: 2.50x"), "{t}");
        assert!(!table(&[row(8, 25.0)]).contains(" vs 1"));
    }
}
