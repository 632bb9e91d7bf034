//! Fashion-MNIST classification with a trained iGPT (the `fw` preset: 4 layers, width 128,
//! 14x14, 16 grey levels) in int8 on a Cortex-M4F (QEMU `mps2-an386`): the model file
//! lives in flash, the scratch in a static sized by igpt-core's `const fn`s, no heap.
//! Each embedded test image is classified and compared with the host's int8 result.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use igpt_core::{scratch_f32_len, scratch_i8_len, Config, Preset};
use panic_semihosting as _;

#[path = "../../common/fault.rs"]
mod fault;
#[path = "../../common/run.rs"]
mod run;

/// The shape this firmware is built for (the model file must match: checked at parse).
const CONFIG: Config = Config::preset(Preset::Fw);
const NF: usize = scratch_f32_len(&CONFIG);
const NQ: usize = scratch_i8_len(&CONFIG);

#[repr(C, align(16))]
struct Aligned<T: ?Sized>(T);

static MODEL: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/model.igpt")));
static VECTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/vectors.bin"));

static mut SCRATCH_F: [f32; NF] = [0.0; NF];
static mut SCRATCH_Q: [i8; NQ] = [0; NQ];

#[entry]
fn main() -> ! {
    let stack = run::StackPaint::paint();
    // Safety: main runs once and nothing else (no interrupts use them) touches these
    // statics; these are the only references ever made to them.
    let (fp, qp) = (&raw mut SCRATCH_F, &raw mut SCRATCH_Q);
    let (f, q) = unsafe { (&mut *fp, &mut *qp) };
    let ok = run::run("classify", &MODEL.0, VECTORS, &CONFIG, f, q, &stack);
    run::exit(ok)
}
