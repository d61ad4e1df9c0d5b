package engine

// Internal opcodes of the pre-decoded form. They are dense so that the
// interpreter's switch compiles to a jump table.
const (
	opInvalid uint8 = iota
	// ALU64, immediate then register source, in this order.
	opAdd64I
	opAdd64R
	opSub64I
	opSub64R
	opMul64I
	opMul64R
	opDiv64I
	opDiv64R
	opSDiv64I
	opSDiv64R
	opOr64I
	opOr64R
	opAnd64I
	opAnd64R
	opLsh64I
	opLsh64R
	opRsh64I
	opRsh64R
	opMod64I
	opMod64R
	opSMod64I
	opSMod64R
	opXor64I
	opXor64R
	opMov64I
	opMov64R
	opArsh64I
	opArsh64R
	opNeg64
	opMovSX8to64
	opMovSX16to64
	opMovSX32to64
	opBswap16
	opBswap32
	opBswap64
	// ALU32
	opAdd32I
	opAdd32R
	opSub32I
	opSub32R
	opMul32I
	opMul32R
	opDiv32I
	opDiv32R
	opSDiv32I
	opSDiv32R
	opOr32I
	opOr32R
	opAnd32I
	opAnd32R
	opLsh32I
	opLsh32R
	opRsh32I
	opRsh32R
	opMod32I
	opMod32R
	opSMod32I
	opSMod32R
	opXor32I
	opXor32R
	opMov32I
	opMov32R
	opArsh32I
	opArsh32R
	opNeg32
	opMovSX8to32
	opMovSX16to32
	opLe16
	opLe32
	opLe64
	opBe16
	opBe32
	opBe64
	// Jumps; off holds the absolute target slot.
	opJa
	opJeq64I
	opJeq64R
	opJgt64I
	opJgt64R
	opJge64I
	opJge64R
	opJset64I
	opJset64R
	opJne64I
	opJne64R
	opJsgt64I
	opJsgt64R
	opJsge64I
	opJsge64R
	opJlt64I
	opJlt64R
	opJle64I
	opJle64R
	opJslt64I
	opJslt64R
	opJsle64I
	opJsle64R
	opJeq32I
	opJeq32R
	opJgt32I
	opJgt32R
	opJge32I
	opJge32R
	opJset32I
	opJset32R
	opJne32I
	opJne32R
	opJsgt32I
	opJsgt32R
	opJsge32I
	opJsge32R
	opJlt32I
	opJlt32R
	opJle32I
	opJle32R
	opJslt32I
	opJslt32R
	opJsle32I
	opJsle32R
	opCall // helper; imm = helper id
	opCallLocal
	opExit
	opLoadImm64 // lddw (constants, map handles, map value addresses)
	// Memory.
	opLdxB
	opLdxH
	opLdxW
	opLdxDW
	opLdxSB
	opLdxSH
	opLdxSW
	opStB
	opStH
	opStW
	opStDW
	opStxB
	opStxH
	opStxW
	opStxDW
	opAtomic32 // imm = atomic op code (RFC encoding)
	opAtomic64
	opLdAbsB
	opLdAbsH
	opLdAbsW
	opLdIndB
	opLdIndH
	opLdIndW
	// Context rewrites (XDP): load the data / data_end address.
	opLdCtxData
	opLdCtxDataEnd
	opHalf // second slot of an LDDW; never executed
	// Fused pairs (superinstructions). The fused op replaces the first slot
	// and skips the second, which keeps its own op for jumps that land on it.
	opMovAdd64I // dst = src + imm            (mov64 dst, src; add64 dst, imm)
	opMovAdd64R // dst = src + r[imm]         (mov64 dst, src; add64 dst, rZ)
	opZext32    // dst = uint32(dst)          (lsh64 dst, 32; rsh64 dst, 32)
	numOps
)
