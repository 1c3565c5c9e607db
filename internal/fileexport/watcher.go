package fileexport

// Watcher hears, from a Syncer, what its listening connection hears: a read cache that must
// not serve what a change replaced implements it (catalog.Cache does).
type Watcher interface {
	// Changed is called for every change notification of tenant.
	Changed(tenant string)
	// KeysChanged is called when a master key rotation is announced, after the key ring
	// was reloaded.
	KeysChanged()
	// Connected is called once the connection listens and the reconcile that follows
	// every connect was started: no change is missed from here on.
	Connected()
	// Disconnected is called when the listening connection is lost (or could not be made):
	// notifications may be missed until the next Connected.
	Disconnected()
}

// watch returns the Syncer's Watcher, or one that ignores everything.
func (s *Syncer) watch() Watcher {
	if s.Watcher == nil {
		return noWatcher{}
	}
	return s.Watcher
}

type noWatcher struct{}

func (noWatcher) Changed(string) {}
func (noWatcher) KeysChanged()   {}
func (noWatcher) Connected()     {}
func (noWatcher) Disconnected()  {}
