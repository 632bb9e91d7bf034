include!("../common/build_support.rs");

fn main() {
    setup(
        "MEMORY
{
  /* QEMU mps3-an547: vector table and code in the 512 KiB ITCM; data, stack and the
     weights in the 2 GiB DDR at 0x6000_0000 (kept below 0xA000_0000, normal memory). */
  FLASH   : ORIGIN = 0x00000000, LENGTH = 512K
  RAM     : ORIGIN = 0x60000000, LENGTH = 256M
  WEIGHTS : ORIGIN = 0x70000000, LENGTH = 512M
}
SECTIONS
{
  .weights : ALIGN(16)
  {
    KEEP(*(.weights .weights.*));
    . = ALIGN(16);
  } > WEIGHTS
}
INSERT AFTER .rodata;
",
        &[
            ("IGPT_S_MODEL", "../models/igpt-s.igpt", "model.igpt"),
            ("IGPT_S_VECTORS", "../models/igpt-s.vec", "vectors.bin"),
        ],
    );
}
