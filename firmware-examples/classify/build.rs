include!("../common/build_support.rs");

fn main() {
    setup(
        "MEMORY
{
  /* QEMU mps2-an386: 4 MiB code memory and 4 MiB SRAM. */
  FLASH : ORIGIN = 0x00000000, LENGTH = 4M
  RAM   : ORIGIN = 0x20000000, LENGTH = 4M
}
",
        &[
            ("IGPT_MODEL", "../models/fm-fw.igpt", "model.igpt"),
            ("IGPT_VECTORS", "../models/fm-fw.vec", "vectors.bin"),
        ],
    );
}
