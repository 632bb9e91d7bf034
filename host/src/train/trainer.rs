//! The one training loop, used by pretraining and fine-tuning.
//!
//! A [`Task`] says what one step's loss is, how to evaluate, and what checkpoint its
//! model makes; the loop owns everything else: the learning-rate schedule, AdamW, exact
//! resume, evaluation every `eval_every` steps, `log.csv` and its curves, the checkpoint
//! policy and early stopping.
//!
//! Files of a run folder, each written atomically, in this order at every evaluation:
//! `log.csv`, the curves (PNG), the best model (when the task keeps one and the score
//! improved), then the state checkpoint (weights, AdamW moments, step, data-RNG state,
//! early-stopping record and the running means of the log's next row). An interruption
//! between two of these writes loses nothing: on resume, log rows after the state's step
//! are dropped and recomputed, and the best model is rewritten with the same bytes.
//! `--stop-after N` saves the state at step N as an interruption would (no evaluation),
//! so N steps + resume gives the bytes of an uninterrupted run.
//!
//! Data parallel ([`super::distributed`]): every rank runs this loop with the same RNG,
//! so all draw the same global batch; the task computes the loss of this rank's rows,
//! one allreduce sums the gradients before AdamW (whose clip needs the global norm), and
//! every rank takes the same step. Training metrics are additive over the shards and
//! summed at each evaluation (and state save) in rank order; evaluation is sharded and
//! reduced inside the task. Rank 0 alone writes files and shows progress; every rank
//! checks at the start and the end that it holds the same parameters as rank 0.

use super::adamw::AdamW;
use super::distributed::{model_fingerprint, Collective, DataParallel, Fingerprint, Shard};
use super::schedule::{lr_with, Schedule};
use crate::io::checkpoint::{Checkpoint, LoopProgress, RngState, TrainState};
use crate::io::lock::RunLock;
use crate::io::plot::{self, Series};
use crate::nn::device::ModelDevice;
use crate::nn::{Gpt, ParamName};
use anyhow::{bail, ensure, Context, Result};
use dfdx::prelude::*;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The loss of one step, with gradients tracked.
pub type Loss<D> = Tensor<(), f32, D, OwnedTape<f32, D>>;

/// What a training run computes; the loop does the rest.
pub trait Task<D: ModelDevice> {
    /// `log.csv` columns of the training metrics (means over the steps since the last
    /// row), e.g. `train_bpd`.
    fn train_columns(&self) -> Vec<&'static str>;
    /// `log.csv` columns of the evaluation metrics, e.g. `val_bpd`.
    fn eval_columns(&self) -> Vec<&'static str>;
    /// Tokens one step trains on, over all ranks (for tokens/s).
    fn tokens_per_step(&self) -> usize;
    /// One step's loss on `shard`'s rows of a global batch drawn from `rng` (every rank
    /// draws the whole batch, so the RNG stays in step), normalised over the global
    /// batch so that the shards' losses sum to the whole batch's; and its training
    /// metrics, additive over the shards the same way.
    fn loss(
        &mut self,
        gpt: &Gpt<f32, D>,
        rng: &mut ChaCha8Rng,
        shard: Shard,
    ) -> Result<(Loss<D>, Vec<f64>)>;
    /// Evaluation metrics and the score that the best model and early stopping maximise,
    /// computed over the ranks of `comm` (every rank gets the same numbers).
    fn evaluate(&mut self, gpt: &Gpt<f32, D>, comm: &dyn Collective) -> Result<(Vec<f64>, f64)>;
    /// This run's model as a checkpoint (weights and run metadata, no training state).
    fn checkpoint(&self, gpt: &Gpt<f32, D>) -> Checkpoint;
    /// The learning-rate multiplier of a parameter.
    fn lr_scale(&self, name: ParamName) -> f64 {
        let _ = name;
        1.0
    }
    /// The curves to draw from the log: `(file name, title, y label, columns)`.
    fn curves(&self) -> Vec<Curve>;
    /// One line about an evaluation, for the progress output.
    fn describe(&self, row: &LogRow) -> String;
}

/// One PNG drawn from `log.csv`.
#[derive(Debug, Clone)]
pub struct Curve {
    /// File name in the run folder.
    pub file: &'static str,
    /// Title.
    pub title: &'static str,
    /// Y axis label.
    pub y_label: &'static str,
    /// `(column, legend label)` pairs; training columns are drawn as lines, evaluation
    /// columns with markers.
    pub columns: Vec<(&'static str, &'static str)>,
    /// Multiplies the logged values (100: accuracies logged as fractions drawn as %).
    pub scale: f64,
}

/// The loop's settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Total optimizer steps.
    pub steps: u64,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warmup steps.
    pub warmup: u64,
    /// After the warmup: cosine decay to 0 at `steps`, or constant.
    pub schedule: Schedule,
    /// Evaluate, log and checkpoint every N steps (and at the last step).
    pub eval_every: u64,
    /// Stop after this many evaluations without a better score (`None`: never early).
    pub patience: Option<usize>,
    /// End this process at this step with a state checkpoint, as an interruption would.
    pub stop_after: Option<u64>,
    /// Use the device's fused kernels.
    pub fused: bool,
}

/// Where a run keeps its files.
#[derive(Debug, Clone)]
pub struct RunFiles {
    /// The run folder (log.csv and the curves).
    pub dir: PathBuf,
    /// The checkpoint with the training state (what `--resume` continues).
    pub state: PathBuf,
    /// The best model by the evaluation score, when kept apart from the state.
    pub best: Option<PathBuf>,
}

/// One row of `log.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRow {
    /// Steps done.
    pub step: u64,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Training metrics, means since the previous row.
    pub train: Vec<f64>,
    /// Evaluation metrics.
    pub eval: Vec<f64>,
    /// Training throughput since the previous row (this process).
    pub tokens_per_s: f64,
    /// Wall time of this process so far.
    pub elapsed_s: f64,
}

/// Where a run starts: fresh, or from its state checkpoint.
pub struct Start<D: ModelDevice> {
    /// The model.
    pub gpt: Gpt<f32, D>,
    /// The optimizer.
    pub opt: AdamW<f32, D>,
    /// The data RNG.
    pub rng: ChaCha8Rng,
    /// The early-stopping record.
    pub progress: LoopProgress,
    /// The log so far.
    pub log: Vec<LogRow>,
}

impl<D: ModelDevice> Start<D> {
    /// A fresh start.
    pub fn fresh(gpt: Gpt<f32, D>, opt: AdamW<f32, D>, rng: ChaCha8Rng) -> Start<D> {
        Start {
            gpt,
            opt,
            rng,
            progress: LoopProgress::default(),
            log: Vec::new(),
        }
    }

    /// Restores a run from its state checkpoint `ck` (already checked to belong to this
    /// run), with the log rows up to its step from `files`.
    pub fn resume(
        dev: &D,
        ck: &Checkpoint,
        opt: super::AdamConfig,
        files: &RunFiles,
        columns: usize,
    ) -> Result<Start<D>> {
        let st = ck.state.as_ref().with_context(|| {
            format!(
                "{}: holds no training state to resume",
                files.state.display()
            )
        })?;
        let gpt = ck.model(dev)?;
        let opt = AdamW::from_mats(dev, opt, &st.m, &st.v, st.step);
        let log = read_log(&files.dir.join("log.csv"), columns)
            .into_iter()
            .filter(|r| r.step <= st.step)
            .collect();
        Ok(Start {
            gpt,
            opt,
            rng: st.rng.rng(),
            progress: st.progress.clone(),
            log,
        })
    }
}

/// Takes the run lock of `dir` ([`crate::io::lock`]) on rank 0, before anything of the
/// run is read or written; hold the result for the whole run. Other ranks write nothing
/// and take no lock.
pub fn claim_folder(dir: &Path, comm: &dyn Collective) -> Result<Option<RunLock>> {
    if comm.is_root() {
        RunLock::acquire(dir).map(Some)
    } else {
        Ok(None)
    }
}

/// The data fingerprint of a run folder ([`crate::data::fingerprint`]).
pub const DATA_FINGERPRINT: &str = "data-fingerprint.json";

/// Records the fingerprint of `data` in a fresh run's folder, or on `resume` checks it
/// against the one recorded (a run folder from before fingerprints gets one now). Rank 0
/// only; call it once the run's other checks passed, before the loop.
pub fn check_data(
    files: &RunFiles,
    data: &Path,
    resume: bool,
    comm: &dyn Collective,
) -> Result<()> {
    use crate::data::fingerprint::DataFingerprint;
    if !comm.is_root() {
        return Ok(());
    }
    let path = files.dir.join(DATA_FINGERPRINT);
    let now = DataFingerprint::of(data)?;
    if resume && path.exists() {
        let bytes = crate::io::read_limited(&path, 64 << 20)?;
        let recorded: DataFingerprint = serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not a data fingerprint", path.display()))?;
        if let Some(diff) = recorded.difference(&now, data) {
            bail!(
                "{diff}: the data changed since this run started ({}); resume with its data, or start a new run",
                path.display()
            );
        }
        return Ok(());
    }
    crate::io::write_atomic(&path, serde_json::to_string_pretty(&now)?.as_bytes())
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Steps done in total (including before a resume).
    pub steps: u64,
    /// The last log row, if any evaluation ran.
    pub last: Option<LogRow>,
    /// The early-stopping record (best score and its step).
    pub progress: LoopProgress,
    /// True when early stopping ended the run.
    pub stopped_early: bool,
    /// Wall time of this process.
    pub seconds: f64,
    /// Throughput and the allreduce's share of this process's steps.
    pub throughput: Throughput,
    /// Data parallel: FNV-1a of the final parameters, checked to be the same on every
    /// rank (`None` for one process).
    pub fingerprint: Option<u64>,
}

/// Where a process's step time went (steps after its first, which warms up).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Throughput {
    /// Steps timed.
    pub steps: u64,
    /// Seconds in those steps (loss, backward, allreduce, AdamW; no evaluation).
    pub step_s: f64,
    /// Seconds of those in the allreduce call (waiting for the slowest rank included).
    pub reduce_s: f64,
    /// Seconds of those copying gradients to and from the flat host buffer.
    pub stage_s: f64,
    /// Global tokens per second over the timed steps.
    pub tokens_per_s: f64,
}

/// Runs `task` from `start` to `settings.steps` (or the stop point, or early stopping),
/// on one process.
pub fn run<D: ModelDevice, T: Task<D>>(
    task: &mut T,
    start: Start<D>,
    settings: &Settings,
    files: &RunFiles,
    show: bool,
) -> Result<Outcome> {
    run_parallel(
        task,
        start,
        settings,
        files,
        show,
        &mut DataParallel::single(),
    )
}

/// [`run`] on every rank of `dp` (data parallel; see the module docs).
pub fn run_parallel<D: ModelDevice, T: Task<D>>(
    task: &mut T,
    start: Start<D>,
    settings: &Settings,
    files: &RunFiles,
    show: bool,
    dp: &mut DataParallel<'_, D>,
) -> Result<Outcome> {
    ensure!(settings.steps > 0, "--steps must be positive");
    ensure!(settings.eval_every > 0, "--eval-every must be positive");
    let comm = dp.comm();
    let shard = comm.shard();
    let root = comm.is_root();
    let show = show && root;
    let Start {
        mut gpt,
        mut opt,
        mut rng,
        mut progress,
        mut log,
    } = start;
    gpt.fused = settings.fused;
    let n_train = task.train_columns().len();
    let first = opt.step;
    ensure!(
        first <= settings.steps,
        "{}: saved at step {first}, past --steps {}; resume with --steps {first} or more",
        files.state.display(),
        settings.steps
    );
    if comm.size() > 1 {
        // Every rank starts from the same point (step, data RNG, parameters).
        let rs = RngState::of(&rng);
        let mut start_print = Fingerprint::default();
        start_print
            .u64(opt.step)
            .bytes(&rs.seed)
            .u64(rs.stream)
            .bytes(&rs.word_pos.to_le_bytes())
            .u64(model_fingerprint(&gpt.params));
        comm.agree(
            "the starting state (step, data RNG, parameters)",
            start_print.value(),
        )?;
    }
    let end = settings
        .stop_after
        .map_or(settings.steps, |s| s.min(settings.steps));
    let t0 = Instant::now();
    let bar = crate::progress::bar(settings.steps, "train", show);
    bar.set_position(first);
    let exhausted = |p: &LoopProgress| settings.patience.is_some_and(|k| p.since_best >= k);
    let mut stopped_early = exhausted(&progress);
    if progress.window_sum.len() != n_train {
        progress.window_sum = vec![0.0; n_train];
        progress.window_steps = 0;
    }
    let mut window_start = Instant::now();
    let mut window_timed = 0u64;
    // This rank's training metrics since the last sum over the ranks, step by step.
    let mut pending: Vec<f64> = Vec::new();
    let mut timing = Throughput::default();
    let mut step = first;
    while step < end && !stopped_early {
        let t_step = Instant::now();
        let (reduce0, stage0) = (dp.reduce_s, dp.stage_s);
        let lr = lr_with(
            settings.schedule,
            step,
            settings.lr,
            settings.warmup,
            settings.steps,
        );
        let (loss, metrics) = task.loss(&gpt, &mut rng, shard)?;
        ensure!(
            metrics.len() == n_train,
            "the task gave {} training metrics for {n_train} columns",
            metrics.len()
        );
        let value = crate::nn::value(loss.retaped::<NoneTape>());
        if !value.is_finite() {
            bail!("the loss became {value} at step {step}: lower --lr");
        }
        let mut grads = loss.backward();
        dp.allreduce_grads(&gpt.params, &mut grads)?;
        opt.update(
            &mut gpt.params,
            &mut grads,
            lr,
            |n| task.lr_scale(n),
            gpt.fused,
        );
        if step > first {
            timing.steps += 1;
            timing.step_s += t_step.elapsed().as_secs_f64();
            timing.reduce_s += dp.reduce_s - reduce0;
            timing.stage_s += dp.stage_s - stage0;
        }
        pending.extend(&metrics);
        progress.window_steps += 1;
        window_timed += 1;
        step += 1;
        bar.inc(1);
        let rate = (window_timed as usize * task.tokens_per_step()) as f64
            / window_start.elapsed().as_secs_f64().max(1e-9);
        if shard.is_whole() {
            bar.set_message(format!("loss {value:.4}, {rate:.0} tok/s"));
        } else {
            bar.set_message(format!(
                "rank 0's share of the loss {value:.4}, {rate:.0} tok/s"
            ));
        }
        if step % settings.eval_every == 0 || step == settings.steps {
            sum_metrics(comm, &mut pending, &mut progress.window_sum);
            let (eval, score) = task.evaluate(&gpt, comm)?;
            let row = LogRow {
                step,
                lr,
                train: progress
                    .window_sum
                    .iter()
                    .map(|s| s / progress.window_steps.max(1) as f64)
                    .collect(),
                eval,
                tokens_per_s: rate,
                elapsed_s: t0.elapsed().as_secs_f64(),
            };
            crate::progress::note(&bar, show, task.describe(&row));
            log.push(row);
            if root {
                write_log(files, task, &log)?;
            }
            let better = progress.best_score.is_none_or(|b| score > b);
            if better {
                progress.best_score = Some(score);
                progress.best_step = step;
                progress.since_best = 0;
                if let (Some(best), true) = (&files.best, root) {
                    task.checkpoint(&gpt).save(best)?;
                }
            } else {
                progress.since_best += 1;
            }
            progress.window_sum.iter_mut().for_each(|s| *s = 0.0);
            progress.window_steps = 0;
            stopped_early = exhausted(&progress);
            if stopped_early {
                crate::progress::note(
                    &bar,
                    show,
                    format!(
                        "no better score for {} evaluations: stopping (best at step {})",
                        progress.since_best, progress.best_step
                    ),
                );
            }
            if root {
                save_state(task, &gpt, &opt, &rng, &progress, files)?;
            }
            window_start = Instant::now();
            window_timed = 0;
        } else if step == end {
            sum_metrics(comm, &mut pending, &mut progress.window_sum);
            if root {
                save_state(task, &gpt, &opt, &rng, &progress, files)?;
            }
        }
    }
    bar.finish_and_clear();
    timing.tokens_per_s =
        (timing.steps as usize * task.tokens_per_step()) as f64 / timing.step_s.max(1e-9);
    // Every rank ends with rank 0's parameters, and after rank 0's last file write.
    let fingerprint = if comm.size() > 1 {
        let f = model_fingerprint(&gpt.params);
        comm.agree(&format!("the parameters after step {step}"), f)?;
        Some(f)
    } else {
        None
    };
    comm.barrier();
    Ok(Outcome {
        steps: step,
        last: log.last().cloned(),
        progress,
        stopped_early,
        seconds: t0.elapsed().as_secs_f64(),
        throughput: timing,
        fingerprint,
    })
}

/// Adds the training metrics of the steps in `pending` (this rank's, step-major) to
/// `window_sum`, each step's summed over the ranks in rank order, step by step as one
/// process adds them; empties `pending`.
fn sum_metrics(comm: &dyn Collective, pending: &mut Vec<f64>, window_sum: &mut [f64]) {
    let n = window_sum.len();
    if n == 0 {
        pending.clear();
        return;
    }
    let summed = comm.sum_in_rank_order(pending);
    for step in summed.chunks_exact(n) {
        for (s, m) in window_sum.iter_mut().zip(step) {
            *s += m;
        }
    }
    pending.clear();
}

fn save_state<D: ModelDevice, T: Task<D>>(
    task: &T,
    gpt: &Gpt<f32, D>,
    opt: &AdamW<f32, D>,
    rng: &ChaCha8Rng,
    progress: &LoopProgress,
    files: &RunFiles,
) -> Result<()> {
    let mut ck = task.checkpoint(gpt);
    let (m, v) = opt.to_mats();
    ck.state = Some(TrainState {
        step: opt.step,
        m,
        v,
        rng: RngState::of(rng),
        progress: progress.clone(),
    });
    ck.save(&files.state)
}

fn header<D: ModelDevice, T: Task<D>>(task: &T) -> String {
    let mut cols = vec!["step", "lr"];
    cols.extend(task.train_columns());
    cols.extend(task.eval_columns());
    cols.extend(["tokens_per_s", "elapsed_s"]);
    cols.join(",")
}

/// Reads `log.csv` rows of `columns` values each (step, lr, metrics, tokens/s, elapsed);
/// rows of another width are skipped.
pub fn read_log(path: &Path, columns: usize) -> Vec<LogRow> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let header: Vec<&str> = text.lines().next().unwrap_or("").split(',').collect();
    let n_metrics = columns.saturating_sub(4);
    let n_train = header
        .iter()
        .filter(|h| h.starts_with("train"))
        .count()
        .min(n_metrics);
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<f64> = l
                .split(',')
                .map(|x| x.parse().unwrap_or(f64::NAN))
                .collect();
            (f.len() == columns && columns >= 4).then(|| LogRow {
                step: f[0] as u64,
                lr: f[1],
                train: f[2..2 + n_train].to_vec(),
                eval: f[2 + n_train..columns - 2].to_vec(),
                tokens_per_s: f[columns - 2],
                elapsed_s: f[columns - 1],
            })
        })
        .collect()
}

fn write_log<D: ModelDevice, T: Task<D>>(
    files: &RunFiles,
    task: &T,
    rows: &[LogRow],
) -> Result<()> {
    let mut s = header(task);
    s.push('\n');
    for r in rows {
        s.push_str(&format!("{},{:e}", r.step, r.lr));
        for v in r.train.iter().chain(&r.eval) {
            s.push_str(&format!(",{v:.6}"));
        }
        s.push_str(&format!(",{:.1},{:.1}\n", r.tokens_per_s, r.elapsed_s));
    }
    crate::io::write_atomic(&files.dir.join("log.csv"), s.as_bytes())?;
    let train_cols = task.train_columns();
    let eval_cols = task.eval_columns();
    for curve in task.curves() {
        let mut series = Vec::new();
        for (i, (col, label)) in curve.columns.iter().enumerate() {
            let pick = |r: &LogRow| -> f64 {
                if let Some(j) = train_cols.iter().position(|c| c == col) {
                    r.train.get(j).copied().unwrap_or(f64::NAN)
                } else if let Some(j) = eval_cols.iter().position(|c| c == col) {
                    r.eval.get(j).copied().unwrap_or(f64::NAN)
                } else {
                    f64::NAN
                }
            };
            let points: Vec<(f64, f64)> = rows
                .iter()
                .map(|r| (r.step as f64, curve.scale * pick(r)))
                .collect();
            if points.iter().any(|p| p.1.is_finite()) {
                series.push(Series {
                    label: label.to_string(),
                    points,
                    color: plot::COLORS[i % plot::COLORS.len()],
                    markers: eval_cols.contains(col),
                });
            }
        }
        if !series.is_empty() {
            plot::line_plot(
                &files.dir.join(curve.file),
                curve.title,
                "step",
                curve.y_label,
                &series,
            )?;
        }
    }
    Ok(())
}
