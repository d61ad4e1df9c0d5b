//go:build linux && amd64

package engine

// SetJITBaseline makes the JIT compile programs for x86-64's baseline,
// without BMI2 and MOVBE, until the returned function restores the CPU's
// features (tests only).
func SetJITBaseline() (restore func()) {
	saved := jitCPU
	jitCPU = jitFeatures{}
	return func() { jitCPU = saved }
}

// JITUsesCPUFeatures reports whether the JIT uses BMI2 and MOVBE on this
// CPU (tests only).
func JITUsesCPUFeatures() (bmi2, movbe bool) { return jitCPU.bmi2, jitCPU.movbe }

// SetJITNativeMemmem makes the JIT call bpfblk_memmem in assembly (on) or
// through the helper's Go path (off) until the returned function restores
// the setting (tests and benchmarks only).
func SetJITNativeMemmem(on bool) (restore func()) {
	saved := jitNativeMemmem
	jitNativeMemmem = on
	return func() { jitNativeMemmem = saved }
}

// MemmemIndex is the JIT's memmem search (tests and benchmarks only): the
// index of n (1 to MemmemMaxNeedle bytes) in h or -1, or fellBack when it
// gave up to bytes.Index.
func MemmemIndex(h, n []byte, avx2 bool) (i int, fellBack bool) { return memmemIndex(h, n, avx2) }

// MemmemMaxNeedle is the longest needle MemmemIndex takes.
const MemmemMaxNeedle = jitMemmemMaxNeedle

// JITUsesAVX2 reports whether the JIT's memmem uses AVX2 on this CPU.
func JITUsesAVX2() bool { return jitCPU.avx2 }
