package mock

// SetExecHook makes the controller's compute cores call f before every
// program run.
func SetExecHook(c *Controller, f func()) {
	s := c.compute()
	s.mu.Lock()
	s.execHook = f
	s.mu.Unlock()
}
