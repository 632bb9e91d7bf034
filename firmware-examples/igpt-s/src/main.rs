//! The paper's iGPT-S shape (24 layers, width 512, 8 heads, 512 colours) in int8 (~73 MiB)
//! on a Cortex-M55 (QEMU `mps3-an547`, run as Armv7E-M code): a seeded model at a reduced
//! resolution (8x8 by default, so a probe fits a CI minute) classifies one image with a
//! probe on a middle layer; the result must equal the host core's.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use igpt_core::{scratch_f32_len, scratch_i8_len, Config, Preset};
use panic_semihosting as _;

#[path = "../../common/fault.rs"]
mod fault;
#[path = "../../common/run.rs"]
mod run;

/// Image side this firmware is built for (`IGPT_S_SIDE` at build time, default 8).
const SIDE: usize = side(option_env!("IGPT_S_SIDE"));

const fn side(v: Option<&str>) -> usize {
    let Some(s) = v else { return 8 };
    let b = s.as_bytes();
    let (mut i, mut n) = (0, 0);
    while i < b.len() {
        n = n * 10 + (b[i] - b'0') as usize;
        i += 1;
    }
    n
}
const CONFIG: Config = Config {
    side: SIDE,
    ..Config::preset(Preset::S)
};
const NF: usize = scratch_f32_len(&CONFIG);
const NQ: usize = scratch_i8_len(&CONFIG);

#[repr(C, align(16))]
struct Aligned<T: ?Sized>(T);

#[link_section = ".weights"]
static MODEL: Aligned<[u8; include_bytes!(concat!(env!("OUT_DIR"), "/model.igpt")).len()]> =
    Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/model.igpt")));
static VECTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/vectors.bin"));

static mut SCRATCH_F: [f32; NF] = [0.0; NF];
static mut SCRATCH_Q: [i8; NQ] = [0; NQ];

#[entry]
fn main() -> ! {
    let stack = run::StackPaint::paint();
    // Safety: main runs once and nothing else touches these statics.
    let (fp, qp) = (&raw mut SCRATCH_F, &raw mut SCRATCH_Q);
    let (f, q) = unsafe { (&mut *fp, &mut *qp) };
    let ok = run::run("igpt-s", &MODEL.0, VECTORS, &CONFIG, f, q, &stack);
    run::exit(ok)
}
