package mock

// SetExecHook makes the controller's compute cores call f before every
// program run.
func SetExecHook(c *Controller, f func()) {
	c.compute().execHook.Store(&f)
}
