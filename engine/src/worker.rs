//! One loaded model: a thread that owns the llama.cpp model and context and serves many
//! requests at once by continuous batching.
//!
//! The context has `slots` parallel sequences (each with its own KV cache of `ctx_per_slot`
//! tokens). Every step the thread builds one `llama_batch` holding the next token of every
//! generating sequence plus chunks of the prompts of newly admitted ones, decodes it once, and
//! samples each sequence from its own logits. A request that arrives while all slots are busy
//! waits in a bounded queue; when the queue is full the request is refused at once as busy,
//! rather than piling up behind the others.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::{mpsc, oneshot};

use crate::options::Options;
use crate::template::{self, TemplateSource};
use crate::text::{StopScanner, Utf8Assembler};

/// Errors of the engine core, each mapped to one HTTP status by the server.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// Every slot is busy and the queue is full.
    #[error("engine busy: all {slots} slots are generating and {queue} requests are already waiting; retry shortly")]
    Busy { slots: u32, queue: usize },
    /// The model is not in the store.
    #[error("model {0:?} not found, try pulling it first")]
    ModelNotFound(String),
    /// The store refused the model (corrupted blob, unknown layer, ...).
    #[error("model {name:?} cannot be loaded: {why}")]
    Refused { name: String, why: String },
    /// llama.cpp could not load the model or create a context.
    #[error("loading model {name:?} failed: {why}")]
    Load { name: String, why: String },
    /// The request cannot be served as asked (prompt too long, no template, bad options, ...).
    #[error("{0}")]
    BadRequest(String),
    /// llama.cpp failed while decoding.
    #[error("inference failed: {0}")]
    Decode(String),
    /// The model's worker thread is gone.
    #[error("the model worker stopped; the request was not completed")]
    Stopped,
}

/// Sizing of one loaded model.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Sequences decoded together (parallel requests per model).
    pub slots: u32,
    /// KV cache per sequence, in tokens: the largest prompt + answer one request can have.
    pub ctx_per_slot: u32,
    /// Tokens per decode call; prompt chunks are cut to fit.
    pub batch: u32,
    /// Requests that may wait for a slot before new ones are refused as busy.
    pub queue: usize,
    /// CPU threads for llama.cpp.
    pub threads: i32,
    /// Layers offloaded to a GPU (0 on CPU builds).
    pub gpu_layers: u32,
    /// The inputs of an `/api/embed` request share a decode up to this many tokens together
    /// (models without a KV cache); a longer input has a decode of its own.
    pub embed_batch: u32,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            slots: 4,
            ctx_per_slot: 2048,
            batch: 512,
            queue: 32,
            threads: std::thread::available_parallelism().map(|n| n.get() as i32).unwrap_or(2),
            gpu_layers: 0,
            embed_batch: EMBED_BATCH_TOKENS,
        }
    }
}

/// What to generate from.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// A conversation, formatted with the model's chat template; `(role, content)` pairs.
    Chat(Vec<(String, String)>),
    /// Text sent as is (Ollama's `raw`, or a model without a template).
    Raw(String),
}

/// A generation request as the worker sees it.
#[derive(Debug)]
pub struct GenJob {
    pub prompt: Prompt,
    /// Tokens from a previous `/api/generate` response (`context`), evaluated before the prompt.
    pub context: Vec<i32>,
    pub options: Options,
    pub events: mpsc::UnboundedSender<Event>,
}

/// Timing and counts, in Ollama's terms.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub prompt_eval_count: u64,
    pub prompt_eval_duration: Duration,
    pub eval_count: u64,
    pub eval_duration: Duration,
    pub done_reason: &'static str,
    /// Prompt and answer tokens, returned by `/api/generate` as `context`.
    pub context: Vec<i32>,
}

/// What a generation reports, in order: `Started`, any number of `Text`, then `Done`; or
/// `Failed` at any point.
#[derive(Debug)]
pub enum Event {
    Started { prompt_tokens: usize },
    Text(String),
    Done(Stats),
    Failed(EngineError),
}

/// An embedding request.
#[derive(Debug)]
pub struct EmbedJob {
    pub inputs: Vec<String>,
    /// Cut inputs longer than the context instead of failing.
    pub truncate: bool,
    pub reply: oneshot::Sender<Result<Embeddings, EngineError>>,
}

#[derive(Debug, Clone)]
pub struct Embeddings {
    /// One L2-normalised vector per input (Ollama's `/api/embed` normalises).
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: u64,
}

#[derive(Debug)]
enum Job {
    Generate(GenJob),
    Embed(EmbedJob),
}

/// Facts about a loaded model that the API reports.
#[derive(Debug, Clone)]
pub struct LoadedInfo {
    pub n_embd: u32,
    pub n_ctx_train: u32,
    pub n_params: u64,
    pub size_bytes: u64,
    /// The template in use, if the model can chat.
    pub template: Option<TemplateSource>,
    pub load_duration: Duration,
}

/// Where to load from and how the templates are chosen.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub name: String,
    pub model_path: PathBuf,
    pub template_layer: Option<String>,
    pub architecture: String,
}

/// A running model worker. Dropping it stops the thread once its work is done.
#[derive(Debug)]
pub struct Worker {
    tx: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
    pub info: LoadedInfo,
    config: WorkerConfig,
    /// Requests accepted and not yet finished (in slots or queued).
    in_flight: Arc<AtomicUsize>,
}

static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

/// llama.cpp's process-wide backend, initialised once.
pub fn backend() -> Result<&'static LlamaBackend, EngineError> {
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| EngineError::Load { name: String::new(), why: format!("llama.cpp backend: {e}") })
}

impl Worker {
    /// Load the model (blocking: call from a blocking thread) and start serving.
    pub fn spawn(spec: LoadSpec, config: WorkerConfig) -> Result<Worker, EngineError> {
        let started = Instant::now();
        let (tx, rx) = sync_channel::<Job>(config.queue);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<LoadedInfo, EngineError>>();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let cfg = config.clone();
        let counter = in_flight.clone();
        let thread = std::thread::Builder::new()
            .name(format!("llama-{}", spec.name))
            .spawn(move || run(spec, cfg, rx, ready_tx, counter, started))
            .map_err(|e| EngineError::Load { name: String::new(), why: format!("spawning worker thread: {e}") })?;
        match ready_rx.recv() {
            Ok(Ok(info)) => Ok(Worker { tx: Some(tx), thread: Some(thread), info, config, in_flight }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(EngineError::Stopped)
            }
        }
    }

    fn submit(&self, job: Job) -> Result<(), EngineError> {
        let tx = self.tx.as_ref().ok_or(EngineError::Stopped)?;
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        match tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                match e {
                    TrySendError::Full(_) => Err(EngineError::Busy { slots: self.config.slots, queue: self.config.queue }),
                    TrySendError::Disconnected(_) => Err(EngineError::Stopped),
                }
            }
        }
    }

    /// Start a generation; events arrive on the returned channel.
    pub fn generate(&self, prompt: Prompt, context: Vec<i32>, options: Options) -> Result<mpsc::UnboundedReceiver<Event>, EngineError> {
        let (events, rx) = mpsc::unbounded_channel();
        self.submit(Job::Generate(GenJob { prompt, context, options, events }))?;
        Ok(rx)
    }

    /// Embed texts.
    pub async fn embed(&self, inputs: Vec<String>, truncate: bool) -> Result<Embeddings, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Embed(EmbedJob { inputs, truncate, reply }))?;
        rx.await.map_err(|_| EngineError::Stopped)?
    }

    /// Requests accepted and not finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop once its slots are empty.
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One active sequence.
struct Slot {
    seq: i32,
    events: mpsc::UnboundedSender<Event>,
    options: Options,
    /// Prompt followed by generated tokens.
    tokens: Vec<LlamaToken>,
    n_prompt: usize,
    /// Tokens of `tokens` already in the KV cache.
    n_fed: usize,
    /// This sequence's context limit (its `num_ctx`, capped at the slot size).
    limit: usize,
    sampler: LlamaSampler,
    utf8: Utf8Assembler,
    stop: StopScanner,
    n_generated: u64,
    admitted: Instant,
    first_token: Option<Instant>,
    /// Index of this sequence's logits in the current batch.
    logits_at: Option<i32>,
}

fn sampler_for(o: &Options, n_vocab: i32, ctx: usize) -> LlamaSampler {
    let mut chain = Vec::new();
    if o.repeat_penalty != 1.0 || o.presence_penalty != 0.0 || o.frequency_penalty != 0.0 {
        let last_n = if o.repeat_last_n < 0 { ctx as i32 } else { o.repeat_last_n };
        chain.push(LlamaSampler::penalties(n_vocab, last_n, o.repeat_penalty, o.frequency_penalty, o.presence_penalty));
    }
    if o.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        if o.top_k > 0 {
            chain.push(LlamaSampler::top_k(o.top_k));
        }
        chain.push(LlamaSampler::top_p(o.top_p, 1));
        if o.min_p > 0.0 {
            chain.push(LlamaSampler::min_p(o.min_p, 1));
        }
        chain.push(LlamaSampler::temp(o.temperature));
        // llama.cpp draws a random seed for LLAMA_DEFAULT_SEED (u32::MAX).
        chain.push(LlamaSampler::dist(o.seed.unwrap_or(u32::MAX)));
    }
    LlamaSampler::chain_simple(chain)
}

/// Pick the first template candidate llama.cpp accepts.
fn pick_template(model: &LlamaModel, spec: &LoadSpec) -> Option<(TemplateSource, LlamaChatTemplate)> {
    let has_gguf = model.chat_template(None).is_ok();
    let probe = [LlamaChatMessage::new("user".into(), "hi".into()).ok()?];
    for cand in template::candidates(spec.template_layer.as_deref(), has_gguf, &spec.architecture) {
        let tmpl = match &cand {
            TemplateSource::Gguf => model.chat_template(None).ok(),
            TemplateSource::Builtin(name) => LlamaChatTemplate::new(name).ok(),
        };
        if let Some(t) = tmpl
            && model.apply_chat_template(&t, &probe, true).is_ok()
        {
            return Some((cand, t));
        }
    }
    None
}

fn run(
    spec: LoadSpec,
    cfg: WorkerConfig,
    rx: Receiver<Job>,
    ready: std::sync::mpsc::Sender<Result<LoadedInfo, EngineError>>,
    in_flight: Arc<AtomicUsize>,
    started: Instant,
) {
    let load_err = |why: String| EngineError::Load { name: spec.name.clone(), why };
    let backend = match backend() {
        Ok(b) => b,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let params = LlamaModelParams::default().with_n_gpu_layers(cfg.gpu_layers);
    let model = match LlamaModel::load_from_file(backend, &spec.model_path, &params) {
        Ok(m) => m,
        Err(e) => {
            let _ = ready.send(Err(load_err(e.to_string())));
            return;
        }
    };
    let slots_n = cfg.slots.max(1);
    let ctx_params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(slots_n * cfg.ctx_per_slot))
        .with_n_batch(cfg.batch)
        .with_n_ubatch(cfg.batch)
        .with_n_seq_max(slots_n)
        .with_kv_unified(false)
        .with_n_threads(cfg.threads)
        .with_n_threads_batch(cfg.threads);
    let mut ctx = match model.new_context(backend, ctx_params) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(load_err(format!("creating the context: {e}"))));
            return;
        }
    };
    let template = pick_template(&model, &spec);
    let info = LoadedInfo {
        n_embd: u32::try_from(model.n_embd()).unwrap_or(0),
        n_ctx_train: model.n_ctx_train(),
        n_params: model.n_params(),
        size_bytes: model.size(),
        template: template.as_ref().map(|(s, _)| s.clone()),
        load_duration: started.elapsed(),
    };
    tracing::info!(model = %spec.name, template = ?info.template, slots = slots_n, ctx_per_slot = cfg.ctx_per_slot, "model loaded");
    if ready.send(Ok(info)).is_err() {
        return;
    }
    let mut core = Core {
        model: &model,
        template: template.map(|(_, t)| t),
        cfg: &cfg,
        slots: (0..slots_n).map(|_| None).collect(),
        embed_ctx: None,
        in_flight,
        backend,
    };
    let mut batch = LlamaBatch::new(cfg.batch as usize, slots_n as i32);
    loop {
        // Admission: block when idle, otherwise take what is waiting without blocking.
        let mut closed = false;
        if core.slots.iter().all(Option::is_none) {
            match rx.recv() {
                Ok(job) => core.admit(job, &mut ctx),
                Err(_) => return,
            }
        }
        while core.slots.iter().any(Option::is_none) {
            match rx.try_recv() {
                Ok(job) => core.admit(job, &mut ctx),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        core.step(&mut ctx, &mut batch);
        if closed && core.slots.iter().all(Option::is_none) {
            return;
        }
    }
}

struct Core<'m> {
    model: &'m LlamaModel,
    template: Option<LlamaChatTemplate>,
    cfg: &'m WorkerConfig,
    slots: Vec<Option<Slot>>,
    embed_ctx: Option<LlamaContext<'m>>,
    in_flight: Arc<AtomicUsize>,
    backend: &'static LlamaBackend,
}

impl<'m> Core<'m> {
    fn finish_job(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    fn admit(&mut self, job: Job, ctx: &mut LlamaContext<'m>) {
        match job {
            Job::Embed(e) => {
                let result = self.embed(&e.inputs, e.truncate);
                // The job ends before the reply leaves: a client that has its answer and at once
                // asks for another model must find this worker idle, or the registry cannot
                // unload it and refuses the request as busy (seen with one model loaded at a time:
                // the embedding of a question, then its generation).
                self.finish_job();
                let _ = e.reply.send(result);
            }
            Job::Generate(g) => {
                if let Err(e) = self.start(g, ctx) {
                    // `start` reports its own failure on the job's channel.
                    tracing::debug!("request refused: {e}");
                    self.finish_job();
                }
            }
        }
    }

    fn format(&self, prompt: &Prompt) -> Result<String, EngineError> {
        match prompt {
            Prompt::Raw(text) => Ok(text.clone()),
            Prompt::Chat(messages) => {
                let Some(tmpl) = &self.template else {
                    // Ollama's default template for a model without one is the bare prompt.
                    return Ok(messages.iter().map(|(_, c)| c.as_str()).collect::<Vec<_>>().join("\n"));
                };
                let msgs = messages
                    .iter()
                    .map(|(r, c)| LlamaChatMessage::new(r.clone(), c.clone()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| EngineError::BadRequest("a message contains a NUL character".into()))?;
                self.model
                    .apply_chat_template(tmpl, &msgs, true)
                    .map_err(|e| EngineError::BadRequest(format!("applying the chat template: {e}")))
            }
        }
    }

    fn start(&mut self, job: GenJob, ctx: &mut LlamaContext<'m>) -> Result<(), EngineError> {
        let fail = |e: EngineError| {
            let _ = job.events.send(Event::Failed(e.clone()));
            Err(e)
        };
        let text = match self.format(&job.prompt) {
            Ok(t) => t,
            Err(e) => return fail(e),
        };
        let vocab = self.model.vocab();
        let mut tokens: Vec<LlamaToken> = job.context.iter().map(|t| LlamaToken(*t)).collect();
        // BOS only at the very start; `parse_special` so template markers become their tokens.
        tokens.extend(vocab.tokenize(text.as_bytes(), tokens.is_empty(), true));
        let limit = job.options.num_ctx.map_or(self.cfg.ctx_per_slot, |n| n.min(self.cfg.ctx_per_slot)) as usize;
        if tokens.is_empty() {
            return fail(EngineError::BadRequest("the prompt is empty after tokenisation".into()));
        }
        if tokens.len() >= limit {
            return fail(EngineError::BadRequest(format!(
                "the prompt is {} tokens; the context window is {limit} tokens (num_ctx, at most {} on this engine)",
                tokens.len(),
                self.cfg.ctx_per_slot
            )));
        }
        let n_vocab = self.model.n_vocab();
        if let Some(bad) = tokens.iter().find(|t| t.0 < 0 || t.0 >= n_vocab) {
            return fail(EngineError::BadRequest(format!("context token {} is outside the vocabulary", bad.0)));
        }
        let Some(free) = self.slots.iter().position(Option::is_none) else {
            return fail(EngineError::Decode("internal: admitted a request with no free slot".into()));
        };
        let seq = free as i32;
        // A slot's KV cache is cleared when it is freed; clear again in case a decode failed.
        let _ = ctx.clear_kv_cache_seq(Some(free as u32), None, None);
        let mut sampler = sampler_for(&job.options, n_vocab, limit);
        sampler.accept_many(tokens.iter());
        let _ = job.events.send(Event::Started { prompt_tokens: tokens.len() });
        self.slots[free] = Some(Slot {
            seq,
            stop: StopScanner::new(job.options.stop.clone()),
            options: job.options,
            events: job.events,
            n_prompt: tokens.len(),
            tokens,
            n_fed: 0,
            limit,
            sampler,
            utf8: Utf8Assembler::default(),
            n_generated: 0,
            admitted: Instant::now(),
            first_token: None,
            logits_at: None,
        });
        Ok(())
    }

    /// One decode over every active sequence.
    fn step(&mut self, ctx: &mut LlamaContext<'m>, batch: &mut LlamaBatch) {
        batch.clear();
        let mut budget = self.cfg.batch as usize;
        // Drop sequences whose client went away.
        for i in 0..self.slots.len() {
            if self.slots[i].as_ref().is_some_and(|s| s.events.is_closed()) {
                self.free(i, ctx);
            }
        }
        // Generating sequences first (one token each), so a long new prompt never stalls them;
        // prompts take what is left of the batch.
        let mut order: Vec<usize> = (0..self.slots.len()).filter(|i| self.slots[*i].is_some()).collect();
        order.sort_by_key(|i| self.slots[*i].as_ref().map_or(0, |s| s.tokens.len() - s.n_fed));
        for i in order {
            let Some(slot) = self.slots[i].as_mut() else { continue };
            slot.logits_at = None;
            let pending = slot.tokens.len() - slot.n_fed;
            let take = pending.min(budget);
            if take == 0 {
                continue;
            }
            for k in 0..take {
                let pos = slot.n_fed + k;
                let last = pos + 1 == slot.tokens.len();
                if batch.add(slot.tokens[pos], pos as i32, &[slot.seq], last).is_err() {
                    break;
                }
                if last {
                    slot.logits_at = Some(batch.n_tokens() - 1);
                }
            }
            slot.n_fed += take;
            budget -= take;
        }
        if batch.n_tokens() == 0 {
            return;
        }
        if let Err(e) = ctx.decode(batch) {
            // Fail the sequences in this batch; the others are untouched.
            let err = EngineError::Decode(e.to_string());
            for i in 0..self.slots.len() {
                if let Some(s) = &self.slots[i] {
                    let _ = s.events.send(Event::Failed(err.clone()));
                    self.free(i, ctx);
                }
            }
            return;
        }
        let now = Instant::now();
        let vocab = self.model.vocab();
        for i in 0..self.slots.len() {
            let Some(slot) = self.slots[i].as_mut() else { continue };
            let Some(at) = slot.logits_at.take() else { continue };
            if slot.first_token.is_none() {
                slot.first_token = Some(now);
            }
            let token = slot.sampler.sample(ctx, at);
            let mut done: Option<&'static str> = None;
            let mut by_stop_sequence = false;
            if vocab.is_eog(token) {
                done = Some("stop");
            } else {
                slot.n_generated += 1;
                slot.tokens.push(token);
                let piece = vocab.token_to_piece(token, false, None);
                let text = slot.utf8.push(&piece);
                let scan = slot.stop.push(&text);
                if !scan.emit.is_empty() {
                    let _ = slot.events.send(Event::Text(scan.emit));
                }
                if scan.stopped {
                    done = Some("stop");
                    by_stop_sequence = true;
                } else if slot.options.num_predict.is_some_and(|n| slot.n_generated >= u64::from(n))
                    || slot.tokens.len() >= slot.limit
                {
                    done = Some("length");
                }
            }
            if let Some(reason) = done {
                // Release text held back as a possible stop-sequence prefix; after a stop
                // sequence nothing more is sent.
                if !by_stop_sequence {
                    let tail = slot.utf8.finish();
                    let scan = slot.stop.push(&tail);
                    let mut rest = scan.emit;
                    if !scan.stopped {
                        rest.push_str(&slot.stop.finish());
                    }
                    if !rest.is_empty() {
                        let _ = slot.events.send(Event::Text(rest));
                    }
                }
                let first = slot.first_token.unwrap_or(now);
                let stats = Stats {
                    prompt_eval_count: slot.n_prompt as u64,
                    prompt_eval_duration: first.duration_since(slot.admitted),
                    eval_count: slot.n_generated,
                    eval_duration: now.duration_since(first),
                    done_reason: reason,
                    context: slot.tokens.iter().map(|t| t.0).collect(),
                };
                // The job ends before its last event leaves (as for embeddings, in `admit`).
                let events = slot.events.clone();
                self.free(i, ctx);
                let _ = events.send(Event::Done(stats));
            }
        }
    }

    fn free(&mut self, i: usize, ctx: &mut LlamaContext<'m>) {
        if self.slots[i].take().is_some() {
            let _ = ctx.clear_kv_cache_seq(Some(i as u32), None, None);
            self.finish_job();
        }
    }

    /// Embed `inputs`, several per decode: every input is its own sequence in the batch and
    /// llama.cpp mean-pools each sequence on its own, so a vector does not depend on which
    /// inputs shared its decode (`model_batched_embeddings_match_one_at_a_time`).
    fn embed(&mut self, inputs: &[String], truncate: bool) -> Result<Embeddings, EngineError> {
        let sizing = EmbedSizing::for_config(self.cfg, attends_both_ways(self.model));
        if self.embed_ctx.is_none() {
            // One ubatch holds the whole batch: encoders (BERT) must see a sequence in one piece,
            // and a pooled vector is taken over the tokens of one ubatch. The KV cache (models
            // that have one) is unified, so any sequence may use all of it.
            let params = LlamaContextParams::default()
                .with_embeddings(true)
                .with_pooling_type(LlamaPoolingType::Mean)
                .with_n_ctx(NonZeroU32::new(sizing.batch_tokens))
                .with_n_batch(sizing.batch_tokens)
                .with_n_ubatch(sizing.batch_tokens)
                .with_n_seq_max(sizing.max_seqs)
                .with_kv_unified(true)
                .with_n_threads(self.cfg.threads)
                .with_n_threads_batch(self.cfg.threads);
            let c = self
                .model
                .new_context(self.backend, params)
                .map_err(|e| EngineError::Decode(format!("creating the embedding context: {e}")))?;
            self.embed_ctx = Some(c);
        }
        let Some(ectx) = self.embed_ctx.as_mut() else {
            return Err(EngineError::Stopped);
        };
        // Tokenise and check every input before any is decoded: a bad input costs nothing.
        let vocab = self.model.vocab();
        let mut tokenised = Vec::with_capacity(inputs.len());
        for input in inputs {
            let mut tokens = vocab.tokenize(input.as_bytes(), true, false);
            if tokens.len() > sizing.input_tokens as usize {
                if !truncate {
                    return Err(EngineError::BadRequest(format!(
                        "input is {} tokens, more than the embedding context of {}; set truncate to true to cut it",
                        tokens.len(),
                        sizing.input_tokens
                    )));
                }
                tokens.truncate(sizing.input_tokens as usize);
            }
            if tokens.is_empty() {
                return Err(EngineError::BadRequest("an input is empty".into()));
            }
            tokenised.push(tokens);
        }
        let lengths: Vec<usize> = tokenised.iter().map(Vec::len).collect();
        let mut vectors = Vec::with_capacity(inputs.len());
        let mut batch = LlamaBatch::new(sizing.batch_tokens as usize, 1);
        for group in pack_sequences(&lengths, sizing.pack_tokens as usize, sizing.max_seqs as usize) {
            // Sequence ids restart at 0 for every decode; nothing of the last one may remain.
            ectx.clear_kv_cache();
            batch.clear();
            for (seq, tokens) in tokenised[group.clone()].iter().enumerate() {
                for (pos, t) in tokens.iter().enumerate() {
                    batch
                        .add(*t, pos as i32, &[seq as i32], true)
                        .map_err(|e| EngineError::Decode(format!("embedding batch: {e}")))?;
                }
            }
            ectx.decode(&mut batch).map_err(|e| EngineError::Decode(format!("embedding: {e}")))?;
            for seq in 0..group.len() {
                let v = ectx
                    .embeddings_seq_ith(seq as i32)
                    .map_err(|_| EngineError::Decode("llama.cpp returned no pooled embedding".into()))?;
                vectors.push(l2_normalise(v));
            }
        }
        let prompt_tokens = lengths.iter().sum::<usize>() as u64;
        Ok(Embeddings { vectors, prompt_tokens })
    }
}

/// Most inputs embedded in one decode (the embedding context's `n_seq_max`).
pub const EMBED_MAX_SEQS: u32 = 32;

/// Default tokens of one embedding decode (`WorkerConfig::embed_batch`). llama.cpp attends
/// over the whole ubatch and masks the other sequences out, so the attention work of a decode
/// grows with the square of its tokens, while what packing saves is a fixed 2-3 ms per decode
/// (all-MiniLM-L6-v2, 2 CPU cores; docs/engine.md): short inputs (questions, short notes) share
/// decodes, chunk-sized ones (~200 tokens) are embedded one per decode.
pub const EMBED_BATCH_TOKENS: u32 = 256;

/// How the embedding context is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbedSizing {
    /// Longest input, in tokens (longer ones are cut with `truncate`, else refused).
    pub input_tokens: u32,
    /// Tokens of one decode (context, batch and ubatch size): the longest input fits.
    pub batch_tokens: u32,
    /// Inputs are packed into one decode up to this many tokens together; a longer input
    /// has a decode of its own.
    pub pack_tokens: u32,
    /// Inputs of one decode.
    pub max_seqs: u32,
}

impl EmbedSizing {
    /// `non_causal`: the model attends both ways and keeps no KV cache (BERT-style encoders,
    /// the embedding models). Only those share decodes: in a model with a KV cache a
    /// sequence's place in the cache changes how llama.cpp's flash attention tiles it, and
    /// Gemma 3's vectors moved by up to 1e-2 (cosine 0.9996) between sharing a decode and not.
    pub fn for_config(cfg: &WorkerConfig, non_causal: bool) -> EmbedSizing {
        let input_tokens = cfg.ctx_per_slot.min(cfg.batch.max(512));
        let pack_tokens = cfg.embed_batch.max(1);
        let max_seqs = if non_causal { EMBED_MAX_SEQS } else { 1 };
        EmbedSizing { input_tokens, batch_tokens: input_tokens.max(pack_tokens), pack_tokens, max_seqs }
    }
}

/// Whether the model's attention is non-causal (`<arch>.attention.causal = false` in its
/// GGUF, which llama.cpp reads the same way; absent means causal).
fn attends_both_ways(model: &LlamaModel) -> bool {
    let arch = model.meta_val_str("general.architecture").unwrap_or_default();
    model.meta_val_str(&format!("{arch}.attention.causal")).is_ok_and(|v| v == "false")
}

/// Cut inputs of these token lengths, in order, into runs that fit one decode: at most
/// `max_tokens` tokens and `max_seqs` inputs each. An input longer than `max_tokens` (the
/// caller cuts inputs first) gets a run of its own.
pub fn pack_sequences(lengths: &[usize], max_tokens: usize, max_seqs: usize) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    let mut tokens = 0;
    for (i, &len) in lengths.iter().enumerate() {
        if i > start && (tokens + len > max_tokens || i - start >= max_seqs.max(1)) {
            runs.push(start..i);
            start = i;
            tokens = 0;
        }
        tokens += len;
    }
    if start < lengths.len() {
        runs.push(start..lengths.len());
    }
    runs
}

/// Unit length, as Ollama returns from `/api/embed`; a zero vector stays zero.
pub fn l2_normalise(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 { v.iter().map(|x| x / norm).collect() } else { v.to_vec() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_keeps_order_and_fills_each_decode_up_to_both_limits() {
        assert_eq!(pack_sequences(&[], 100, 4), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(pack_sequences(&[30, 30, 30, 30], 100, 4), vec![0..3, 3..4]);
        assert_eq!(pack_sequences(&[10; 9], 1000, 4), vec![0..4, 4..8, 8..9]);
        assert_eq!(pack_sequences(&[50, 50, 1], 100, 8), vec![0..2, 2..3]);
        // Too long for a batch alone: a run of its own, never an empty run.
        assert_eq!(pack_sequences(&[5, 300, 5], 100, 8), vec![0..1, 1..2, 2..3]);
    }

    #[test]
    fn embedding_batch_holds_at_least_the_longest_input() {
        let cfg = WorkerConfig { ctx_per_slot: 1024, batch: 512, embed_batch: 256, ..WorkerConfig::default() };
        assert_eq!(EmbedSizing::for_config(&cfg, true), EmbedSizing { input_tokens: 512, batch_tokens: 512, pack_tokens: 256, max_seqs: EMBED_MAX_SEQS });
        let cfg = WorkerConfig { embed_batch: 4096, ..cfg };
        assert_eq!(EmbedSizing::for_config(&cfg, true).batch_tokens, 4096);
        // A model with a KV cache embeds one input per decode.
        assert_eq!(EmbedSizing::for_config(&cfg, false).max_seqs, 1);
    }

    #[test]
    fn normalise() {
        let v = l2_normalise(&[3.0, 4.0]);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        assert_eq!(l2_normalise(&[0.0, 0.0]), vec![0.0, 0.0]);
    }
}
