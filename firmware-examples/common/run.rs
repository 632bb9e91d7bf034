// Shared by the firmware binaries (`#[path]` module): parse the model and the test
// vectors, classify each image with igpt-core, compare with the host's int8 result,
// report accuracy, time and the stack high-water mark, exit through semihosting.
//
// Test vectors (`igpt export-vectors`, FORMAT.md) are read with igpt-core's
// `vectors` module, the same code the host writes them with.

use cortex_m_semihosting::{debug, hprintln, syscall};
use igpt_core::vectors::Vectors;
use igpt_core::{Config, Model, Scratch};

/// Largest image the firmware's token buffer holds (64x64).
const MAX_N: usize = igpt_core::config::MAX_SEQ_LEN;

/// Host wall-clock centiseconds since QEMU started (semihosting SYS_CLOCK).
fn centis() -> u32 {
    // Safety: SYS_CLOCK takes no arguments and only returns a value.
    unsafe { syscall!(CLOCK) as u32 }
}

/// The stack region painted at start: from the end of static data up to a margin below
/// the current stack pointer.
pub struct StackPaint {
    lo: usize,
    hi: usize,
    top: usize,
}

const PAINT: u32 = 0xC0DE_F00D;

extern "C" {
    static mut __euninit: u32;
    static _stack_start: u32;
}

impl StackPaint {
    pub fn paint() -> StackPaint {
        let sp = cortex_m::register::msp::read() as usize;
        let lo = (&raw const __euninit) as usize;
        let top = (&raw const _stack_start) as usize;
        let hi = sp.saturating_sub(256) & !3;
        let mut p = (lo + 3) & !3;
        while p < hi {
            // Safety: [lo, hi) is the unused stack between static data and the live
            // frames (hi is 256 bytes below the current stack pointer); nothing else
            // owns it yet.
            unsafe { core::ptr::write_volatile(p as *mut u32, PAINT) };
            p += 4;
        }
        StackPaint {
            lo: (lo + 3) & !3,
            hi,
            top,
        }
    }

    /// Bytes of stack used at the deepest point so far.
    pub fn high_water(&self) -> usize {
        let mut p = self.lo;
        // Safety: reads words of the region painted above, which stays mapped RAM.
        while p < self.hi && unsafe { core::ptr::read_volatile(p as *const u32) } == PAINT {
            p += 4;
        }
        self.top - p
    }
}

/// Runs every test vector; returns true when every prediction equals the host's.
pub fn run(
    name: &str,
    model_bytes: &[u8],
    vectors: &[u8],
    config: &Config,
    f: &mut [f32],
    q: &mut [i8],
    stack: &StackPaint,
) -> bool {
    let t0 = centis();
    let model = match Model::parse_expecting(model_bytes, config) {
        Ok(m) => m,
        Err(e) => {
            hprintln!("{}: model file: {}", name, e);
            return false;
        }
    };
    let (layer, classes) = model.probe().unwrap_or((0, 0));
    hprintln!(
        "{}: model {} bytes at {:p}, {} of {} blocks, {}x{}, width {}, probe layer {} ({} classes), parsed in {} cs",
        name,
        model_bytes.len(),
        model_bytes.as_ptr(),
        model.stored_layers(),
        config.layers,
        config.side,
        config.side,
        config.width,
        layer,
        classes,
        centis().wrapping_sub(t0)
    );
    // Vectors: header, checksum, sizes.
    let vectors = match Vectors::parse(vectors) {
        Ok(v) if v.seq_len() == config.seq_len() && v.seq_len() <= MAX_N => v,
        _ => {
            hprintln!(
                "{}: test vectors are corrupt or for another image size",
                name
            );
            return false;
        }
    };
    let (count, n) = (vectors.len(), vectors.seq_len());
    let mut s = match Scratch::new(config, f, q) {
        Ok(s) => s,
        Err(e) => {
            hprintln!("{}: scratch: {}", name, e);
            return false;
        }
    };
    let mut tokens = [0u16; MAX_N];
    let (mut matches, mut correct) = (0usize, 0usize);
    let mut total_cs = 0u32;
    for i in 0..count {
        let Some(rec) = vectors.record(i) else {
            break;
        };
        if rec.tokens(&mut tokens[..n]).is_err() {
            break;
        }
        let label = rec.label() as usize;
        let host_class = rec.class() as usize;
        let host_p = rec.prob();
        let t = centis();
        let pred = model.classify(&tokens[..n], &mut s);
        let dt = centis().wrapping_sub(t);
        total_cs = total_cs.wrapping_add(dt);
        match pred {
            Ok(p) => {
                let prob = p.probs.get(p.class).copied().unwrap_or(0.0);
                let same = p.class == host_class && prob.to_bits() == host_p.to_bits();
                matches += same as usize;
                correct += (p.class == label) as usize;
                hprintln!(
                    "image {}: class {} p={:.6} | host class {} p={:.6} | label {} | {} | {}.{:02} s",
                    i,
                    p.class,
                    prob,
                    host_class,
                    host_p,
                    label,
                    if same { "match" } else { "MISMATCH" },
                    dt / 100,
                    dt % 100
                );
            }
            Err(e) => hprintln!("image {}: error: {}", i, e),
        }
    }
    let per = if count > 0 {
        total_cs / count as u32
    } else {
        0
    };
    hprintln!(
        "{}: {}/{} predictions equal the host's; accuracy {}/{}; {}.{:02} s per image (QEMU wall time); stack high-water {} bytes",
        name,
        matches,
        count,
        correct,
        count,
        per / 100,
        per % 100,
        stack.high_water()
    );
    matches == count && count > 0
}

/// Exits QEMU with the run's status.
pub fn exit(ok: bool) -> ! {
    debug::exit(if ok {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    #[allow(clippy::empty_loop)]
    loop {}
}
