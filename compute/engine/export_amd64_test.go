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
