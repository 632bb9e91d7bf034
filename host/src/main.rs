//! The `igpt` command line: parses arguments and dispatches to `cli/` (one module per
//! command family). Every error is printed as one line naming the file and the problem,
//! with exit code 1.

mod cli;

use anyhow::Result;
use clap::{Parser, Subcommand};
use igpt::nn::device::DeviceKind;

/// iGPT in Rust: generative pretraining from pixels, int8 inference on microcontrollers.
#[derive(Parser)]
#[command(name = "igpt", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Fit, import or show a colour palette.
    #[command(subcommand)]
    Palette(cli::palette::PaletteCmd),
    /// Print each image's token ids, one image per line, in the order given.
    Tokenize(cli::data::TokenizeArgs),
    /// Parameters, multiply-accumulates per image, f32 and int8 sizes of a model shape.
    Info(cli::data::InfoArgs),
    /// Summarise a dataset: image count, size and images per class.
    Data(cli::data::DataArgs),
    /// Convert a HuggingFace ImageGPT checkpoint (config.json + model.safetensors, or an
    /// HF folder with --dir).
    ImportHf(cli::train::ImportHfArgs),
    /// Write a checkpoint as a HuggingFace ImageGPT folder that transformers loads.
    ExportHf(cli::hf::ExportHfArgs),
    /// Generative pretraining (AR next-pixel or BERT masked-pixel) with checkpoints.
    Pretrain(cli::train::PretrainArgs),
    /// Linear probes on every layer's average-pooled features (or on raw pixels).
    Probe(cli::eval::ProbeArgs),
    /// The paper's Figure 3 at small scale: gather pretrained runs (each folder with its
    /// checkpoint, log.csv and probe/) into a table and plots of probe accuracy against
    /// validation bits/dim and by relative depth.
    Scaling(cli::eval::ScalingArgs),
    /// Sample images (KV-cached), or complete images from their top rows.
    Sample(cli::eval::SampleArgs),
    /// Fine-tune a pretrained model on L_gen + L_clf with a class head, early stopping.
    Finetune(cli::train::FinetuneArgs),
    /// The whole pipeline on an embedded Fashion-MNIST subset: palette, pretraining, probes,
    /// int8 export and classification, samples; prints a summary table.
    Demo(cli::demo::DemoArgs),
    /// Write a seeded, untrained checkpoint (and optionally a seeded probe head): shapes
    /// for benchmarks and firmware tests without training.
    Init(cli::train::InitArgs),
    /// Write a weights-only copy of a checkpoint (no optimizer state): for sharing.
    Strip(cli::train::StripArgs),
    /// Write an int8 model file (postcard, CRC-32) for igpt-core and firmware.
    Export(cli::int8::ExportArgs),
    /// Write test vectors for firmware: test images' tokens, labels and the host core's
    /// int8 prediction for each.
    ExportVectors(cli::int8::VectorsArgs),
    /// Classify image files with an int8 model file (igpt-core's path).
    Classify(cli::int8::ClassifyArgs),
    /// int8 probe accuracy on a test split; with --checkpoint also f32, agreement and NLL.
    Eval(cli::int8::EvalArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(cli::bench::BenchCmd),
}

fn main() {
    igpt::io::keep_freed_memory();
    igpt::io::interrupt::remove_on_signal();
    let argv = negative_values_attached(std::env::args_os());
    let cli = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        // Help and version go to standard output with exit 0; a bad argument is one error
        // line (clap's first line, without its usage block) and exit 1, like every error.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            eprintln!("{}", missing_subcommand(&argv));
            std::process::exit(1);
        }
        Err(e) => {
            let text = e.to_string();
            let what: Vec<&str> = text
                .lines()
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!("{} (see --help)", what.join(" "));
            std::process::exit(1);
        }
    };
    if let Err(e) = run(cli.cmd) {
        // One line: the context chain joined with ": ".
        eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}

/// The error line of a command given without its subcommand (`igpt`, `igpt palette`):
/// which command, and the subcommands it takes.
fn missing_subcommand(argv: &[std::ffi::OsString]) -> String {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let mut path = vec!["igpt".to_string()];
    for a in argv.iter().skip(1) {
        let Some(sub) = a.to_str().and_then(|s| cmd.find_subcommand(s)).cloned() else {
            break;
        };
        path.push(sub.get_name().to_string());
        cmd = sub;
    }
    let names: Vec<&str> = cmd.get_subcommands().map(|c| c.get_name()).collect();
    format!(
        "error: `{}` needs a subcommand, one of: {} (see --help)",
        path.join(" "),
        names.join(", ")
    )
}

/// `--flag -1` as `--flag=-1`: clap would read a negative number after a flag as another
/// flag ("unexpected argument '-1'"); attached, it reaches the flag's own check, whose
/// error names the flag.
fn negative_values_attached(
    args: impl Iterator<Item = std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    let mut out: Vec<std::ffi::OsString> = Vec::new();
    for a in args {
        let numeric = a
            .to_str()
            .is_some_and(|s| s.starts_with('-') && s.len() > 1 && s.parse::<f64>().is_ok());
        let flag = out
            .last()
            .and_then(|p| p.to_str())
            .is_some_and(|p| p.starts_with("--") && p.len() > 2 && !p.contains('='));
        match (numeric, flag, out.last_mut()) {
            (true, true, Some(prev)) => {
                prev.push("=");
                prev.push(&a);
            }
            _ => out.push(a),
        }
    }
    out
}

fn run(cmd: Cmd) -> Result<()> {
    use cli::bench::BenchCmd;
    // A CUDA run in a build without the feature fails before reading any input.
    let device = match &cmd {
        Cmd::Pretrain(a) => a.device,
        Cmd::Finetune(a) => a.device,
        Cmd::Probe(a) => a.device,
        Cmd::Sample(a) => a.device,
        Cmd::Bench(BenchCmd::Train(a)) => a.device,
        Cmd::Bench(BenchCmd::Parity(a)) => a.device,
        _ => DeviceKind::Cpu,
    };
    device.check()?;
    match cmd {
        Cmd::Palette(c) => cli::palette::run(c),
        Cmd::Tokenize(a) => cli::data::tokenize(a),
        Cmd::Info(a) => cli::data::info(a),
        Cmd::Data(a) => cli::data::data_cmd(a),
        Cmd::ImportHf(a) => cli::train::import_hf_cmd(a),
        Cmd::ExportHf(a) => cli::hf::export_hf_cmd(a),
        Cmd::Pretrain(a) => cli::train::pretrain_cmd(a),
        Cmd::Probe(a) => cli::eval::probe_cmd(a),
        Cmd::Scaling(a) => cli::eval::scaling_cmd(a),
        Cmd::Sample(a) => cli::eval::sample_cmd(a),
        Cmd::Finetune(a) => cli::train::finetune_cmd(a),
        Cmd::Demo(a) => cli::demo::demo_cmd(a),
        Cmd::Init(a) => cli::train::init_cmd(a),
        Cmd::Strip(a) => cli::train::strip_cmd(a),
        Cmd::Export(a) => cli::int8::export_cmd(a),
        Cmd::ExportVectors(a) => cli::int8::vectors_cmd(a),
        Cmd::Classify(a) => cli::int8::classify_cmd(a),
        Cmd::Eval(a) => cli::int8::eval_cmd(a),
        Cmd::Bench(c) => cli::bench::run(c),
    }
}
