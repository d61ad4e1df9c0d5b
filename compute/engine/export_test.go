package engine

// SetFusion turns superinstructions on or off for programs compiled after
// the call (tests only).
func SetFusion(on bool) { fusion = on }

// SetDefaultEngine makes e the engine Compile(p, nil) uses (tests only).
func SetDefaultEngine(e Engine) {
	Default()
	defaultEngine = e
}
