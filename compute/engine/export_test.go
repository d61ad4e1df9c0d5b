package engine

// SetFusion turns superinstructions on or off for programs compiled after
// the call (tests only).
func SetFusion(on bool) { fusion = on }
