//! A small eBPF assembler: typed instructions, labels for jumps, and the
//! encoding the kernel's `BPF_PROG_LOAD` takes (`struct bpf_insn`, 8 bytes).
//!
//! It knows only what dpr's XDP program needs: 64-bit ALU, loads and stores,
//! conditional jumps with immediate or register operands, helper calls, map
//! references (`ld_imm64` with `BPF_PSEUDO_MAP_FD`) and exit. A program is
//! built by calling methods in order; [`Asm::label`] makes a forward or
//! backward jump target and [`Asm::bind`] places it. [`Asm::finish`] resolves
//! every jump and refuses unbound labels or offsets that do not fit 16 bits.
//!
//! ```
//! use dpr_xdp::asm::{Asm, Reg, Cond};
//! let mut a = Asm::new();
//! let out = a.label();
//! a.mov_imm(Reg::R0, 2); // XDP_PASS
//! a.jmp_imm(Cond::Eq, Reg::R1, 0, out);
//! a.mov_imm(Reg::R0, 1); // XDP_DROP
//! a.bind(out);
//! a.exit();
//! let code = a.finish().unwrap();
//! assert_eq!(code.len(), 4);
//! ```

/// An eBPF register. `R10` is the read-only frame pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Reg {
    R0 = 0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R7,
    R8,
    R9,
    R10,
}

/// The width of a memory access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// 1 byte.
    B,
    /// 2 bytes.
    H,
    /// 4 bytes.
    W,
    /// 8 bytes.
    DW,
}

impl Size {
    const fn bits(self) -> u8 {
        match self {
            Size::W => 0x00,
            Size::H => 0x08,
            Size::B => 0x10,
            Size::DW => 0x18,
        }
    }
}

/// A 64-bit ALU operation (`BPF_ALU64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Alu {
    Add = 0x00,
    Sub = 0x10,
    Mul = 0x20,
    Div = 0x30,
    Or = 0x40,
    And = 0x50,
    Lsh = 0x60,
    Rsh = 0x70,
    Mod = 0x90,
    Xor = 0xa0,
    Mov = 0xb0,
    Arsh = 0xc0,
}

/// A jump condition (`BPF_JMP`, 64-bit compare). Unsigned unless `S…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Cond {
    Eq = 0x10,
    Gt = 0x20,
    Ge = 0x30,
    Set = 0x40,
    Ne = 0x50,
    Sgt = 0x60,
    Sge = 0x70,
    Lt = 0xa0,
    Le = 0xb0,
    Slt = 0xc0,
    Sle = 0xd0,
}

// Instruction classes, modes and sources.
const CLASS_LD: u8 = 0x00;
const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;
const CLASS_JMP: u8 = 0x05;
const CLASS_ALU64: u8 = 0x07;
const MODE_IMM: u8 = 0x00;
const MODE_MEM: u8 = 0x60;
const SRC_K: u8 = 0x00;
const SRC_X: u8 = 0x08;
const OP_JA: u8 = 0x00;
const OP_CALL: u8 = 0x80;
const OP_EXIT: u8 = 0x90;
/// `src_reg` of an `ld_imm64` whose immediate is a map file descriptor.
const BPF_PSEUDO_MAP_FD: u8 = 1;

/// One encoded instruction, `struct bpf_insn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode: class | size/op | mode/source.
    pub code: u8,
    /// Destination register (low nibble) and source register (high nibble).
    pub regs: u8,
    /// Signed offset (memory displacement or jump distance).
    pub off: i16,
    /// Signed immediate.
    pub imm: i32,
}

impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        Self {
            code,
            regs: (dst & 0xf) | (src << 4),
            off,
            imm,
        }
    }

    /// The 8-byte kernel encoding as the machine's `u64` (little-endian
    /// bitfield layout: code, dst:4 src:4, off, imm).
    pub const fn to_u64(self) -> u64 {
        (self.code as u64)
            | ((self.regs as u64) << 8)
            | ((self.off as u16 as u64) << 16)
            | ((self.imm as u32 as u64) << 32)
    }
}

/// A jump target, made by [`Asm::label`] and placed by [`Asm::bind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label(usize);

/// An assembly error, reported by [`Asm::finish`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AsmError {
    /// A jump names a label that was never bound.
    #[error("label {0} is used but never bound")]
    Unbound(usize),
    /// A label was bound twice.
    #[error("label {0} is bound twice")]
    Rebound(usize),
    /// A jump distance does not fit the 16-bit offset.
    #[error("jump at instruction {0} is too far")]
    TooFar(usize),
}

/// The instruction builder.
#[derive(Debug, Default)]
pub struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    /// (instruction index, label) for every jump to resolve.
    fixups: Vec<(usize, Label)>,
    rebound: Option<usize>,
}

impl Asm {
    /// An empty program.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of instruction slots so far (an `ld_imm64` takes two).
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    /// Whether nothing was emitted yet.
    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// A new, unbound label.
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Places `l` at the next instruction.
    pub fn bind(&mut self, l: Label) {
        match self.labels.get_mut(l.0) {
            Some(slot @ None) => *slot = Some(self.insns.len()),
            _ => self.rebound = Some(l.0),
        }
    }

    fn push(&mut self, i: Insn) -> &mut Self {
        self.insns.push(i);
        self
    }

    /// `dst = imm` (64-bit, sign-extended).
    pub fn mov_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.alu_imm(Alu::Mov, dst, imm)
    }

    /// `dst = src`.
    pub fn mov_reg(&mut self, dst: Reg, src: Reg) -> &mut Self {
        self.alu_reg(Alu::Mov, dst, src)
    }

    /// `dst = dst OP imm` (64-bit).
    pub fn alu_imm(&mut self, op: Alu, dst: Reg, imm: i32) -> &mut Self {
        self.push(Insn::new(
            CLASS_ALU64 | op as u8 | SRC_K,
            dst as u8,
            0,
            0,
            imm,
        ))
    }

    /// `dst = dst OP src` (64-bit).
    pub fn alu_reg(&mut self, op: Alu, dst: Reg, src: Reg) -> &mut Self {
        self.push(Insn::new(
            CLASS_ALU64 | op as u8 | SRC_X,
            dst as u8,
            src as u8,
            0,
            0,
        ))
    }

    /// `dst = *(size *)(src + off)`.
    pub fn load(&mut self, size: Size, dst: Reg, src: Reg, off: i16) -> &mut Self {
        self.push(Insn::new(
            CLASS_LDX | size.bits() | MODE_MEM,
            dst as u8,
            src as u8,
            off,
            0,
        ))
    }

    /// `*(size *)(dst + off) = src`.
    pub fn store(&mut self, size: Size, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.push(Insn::new(
            CLASS_STX | size.bits() | MODE_MEM,
            dst as u8,
            src as u8,
            off,
            0,
        ))
    }

    /// `*(size *)(dst + off) = imm`.
    pub fn store_imm(&mut self, size: Size, dst: Reg, off: i16, imm: i32) -> &mut Self {
        self.push(Insn::new(
            CLASS_ST | size.bits() | MODE_MEM,
            dst as u8,
            0,
            off,
            imm,
        ))
    }

    /// `*(u64 *)(dst + off) += src`, atomically (`BPF_ATOMIC | BPF_ADD`).
    pub fn atomic_add64(&mut self, dst: Reg, off: i16, src: Reg) -> &mut Self {
        const MODE_ATOMIC: u8 = 0xc0;
        const ATOMIC_ADD: i32 = 0x00;
        self.push(Insn::new(
            CLASS_STX | Size::DW.bits() | MODE_ATOMIC,
            dst as u8,
            src as u8,
            off,
            ATOMIC_ADD,
        ))
    }

    /// `dst = map` (the map's address, resolved by the kernel from its fd).
    pub fn load_map_fd(&mut self, dst: Reg, map_fd: i32) -> &mut Self {
        let code = CLASS_LD | Size::DW.bits() | MODE_IMM;
        self.push(Insn::new(code, dst as u8, BPF_PSEUDO_MAP_FD, 0, map_fd));
        self.push(Insn::new(0, 0, 0, 0, 0))
    }

    fn jump(&mut self, i: Insn, to: Label) -> &mut Self {
        self.fixups.push((self.insns.len(), to));
        self.push(i)
    }

    /// `if dst COND imm goto to`.
    pub fn jmp_imm(&mut self, cond: Cond, dst: Reg, imm: i32, to: Label) -> &mut Self {
        self.jump(
            Insn::new(CLASS_JMP | cond as u8 | SRC_K, dst as u8, 0, 0, imm),
            to,
        )
    }

    /// `if dst COND src goto to`.
    pub fn jmp_reg(&mut self, cond: Cond, dst: Reg, src: Reg, to: Label) -> &mut Self {
        self.jump(
            Insn::new(CLASS_JMP | cond as u8 | SRC_X, dst as u8, src as u8, 0, 0),
            to,
        )
    }

    /// `goto to`.
    pub fn ja(&mut self, to: Label) -> &mut Self {
        self.jump(Insn::new(CLASS_JMP | OP_JA, 0, 0, 0, 0), to)
    }

    /// `r0 = helper(r1, …, r5)`; clobbers r1–r5.
    pub fn call(&mut self, helper: i32) -> &mut Self {
        self.push(Insn::new(CLASS_JMP | OP_CALL, 0, 0, 0, helper))
    }

    /// `return r0`.
    pub fn exit(&mut self) -> &mut Self {
        self.push(Insn::new(CLASS_JMP | OP_EXIT, 0, 0, 0, 0))
    }

    /// Resolves jumps; the program as `struct bpf_insn`s.
    pub fn finish(mut self) -> Result<Vec<Insn>, AsmError> {
        if let Some(l) = self.rebound {
            return Err(AsmError::Rebound(l));
        }
        for &(at, Label(l)) in &self.fixups {
            let target = self
                .labels
                .get(l)
                .copied()
                .flatten()
                .ok_or(AsmError::Unbound(l))?;
            let delta = target as i64 - (at as i64 + 1);
            let off = i16::try_from(delta).map_err(|_| AsmError::TooFar(at))?;
            self.insns[at].off = off;
        }
        Ok(self.insns)
    }
}

/// The program as the `u64` words `BPF_PROG_LOAD` reads.
pub fn encode(insns: &[Insn]) -> Vec<u64> {
    insns.iter().map(|i| i.to_u64()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference encodings, as `llvm-objdump -d` prints them for BPF objects.
    #[test]
    fn encodings_match_the_kernel_layout() {
        let mut a = Asm::new();
        a.mov_imm(Reg::R0, 2); // b7 00 00 00 02 00 00 00
        a.load(Size::W, Reg::R2, Reg::R1, 4); // 61 12 04 00 00 00 00 00
        a.store(Size::H, Reg::R10, -12, Reg::R4); // 6b 4a f4 ff 00 00 00 00
        a.store_imm(Size::W, Reg::R10, -4, 7); // 62 0a fc ff 07 00 00 00
        a.alu_imm(Alu::Add, Reg::R2, -16); // 07 02 00 00 f0 ff ff ff
        a.alu_reg(Alu::Add, Reg::R3, Reg::R2); // 0f 23 00 00 00 00 00 00
        a.load_map_fd(Reg::R1, 5); // 18 11 00 00 05 00 00 00 | 00 ..
        a.call(51); // 85 00 00 00 33 00 00 00
        a.exit(); // 95 00 00 00 00 00 00 00
        let got: Vec<[u8; 8]> = encode(&a.finish().unwrap())
            .iter()
            .map(|w| w.to_le_bytes())
            .collect();
        let want: [[u8; 8]; 10] = [
            [0xb7, 0x00, 0, 0, 2, 0, 0, 0],
            [0x61, 0x12, 4, 0, 0, 0, 0, 0],
            [0x6b, 0x4a, 0xf4, 0xff, 0, 0, 0, 0],
            [0x62, 0x0a, 0xfc, 0xff, 7, 0, 0, 0],
            [0x07, 0x02, 0, 0, 0xf0, 0xff, 0xff, 0xff],
            [0x0f, 0x23, 0, 0, 0, 0, 0, 0],
            [0x18, 0x11, 0, 0, 5, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0, 0],
            [0x85, 0, 0, 0, 0x33, 0, 0, 0],
            [0x95, 0, 0, 0, 0, 0, 0, 0],
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn jumps_resolve_forward_and_backward() {
        let mut a = Asm::new();
        let back = a.label();
        let fwd = a.label();
        a.bind(back);
        a.mov_imm(Reg::R0, 0); // 0
        a.jmp_imm(Cond::Gt, Reg::R2, 20, fwd); // 1 -> 4: off 2
        a.jmp_reg(Cond::Ne, Reg::R2, Reg::R3, back); // 2 -> 0: off -3
        a.ja(fwd); // 3 -> 4: off 0
        a.bind(fwd);
        a.exit(); // 4
        let p = a.finish().unwrap();
        assert_eq!(
            (p[1].code, p[1].regs, p[1].off, p[1].imm),
            (0x25, 0x02, 2, 20)
        );
        assert_eq!((p[2].code, p[2].regs, p[2].off), (0x5d, 0x32, -3));
        assert_eq!((p[3].code, p[3].off), (0x05, 0));
    }

    #[test]
    fn unbound_and_rebound_labels_are_errors() {
        let mut a = Asm::new();
        let l = a.label();
        a.ja(l);
        assert_eq!(a.finish(), Err(AsmError::Unbound(0)));

        let mut a = Asm::new();
        let l = a.label();
        a.bind(l);
        a.bind(l);
        a.exit();
        assert_eq!(a.finish(), Err(AsmError::Rebound(0)));
    }

    #[test]
    fn too_far_jumps_are_errors() {
        let mut a = Asm::new();
        let l = a.label();
        a.ja(l);
        for _ in 0..40_000 {
            a.mov_imm(Reg::R0, 0);
        }
        a.bind(l);
        a.exit();
        assert_eq!(a.finish(), Err(AsmError::TooFar(0)));
    }
}
