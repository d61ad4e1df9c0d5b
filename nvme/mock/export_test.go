package mock

// SetExecHook makes the controller's compute cores call f before every
// program run.
func SetExecHook(c *Controller, f func()) {
	if f == nil {
		c.compute().execHook.Store(nil)
		return
	}
	c.compute().execHook.Store(&f)
}
