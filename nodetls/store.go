package nodetls

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/refs"
	"github.com/loopze/certstore/internal/resolver"
	"github.com/loopze/certstore/internal/secret"
)

// DefaultRetryPause is how long a file pair that does not load waits before it is read
// once more: long enough for the second mv of a rotation, short enough for a connection init.
const DefaultRetryPause = resolver.DefaultRetryPause

// Options configure a Store. File and KeyFile are required.
type Options struct {
	// File is the tenant's credentials.json, as the export job (or Sync) writes it.
	File string
	// KeyFile opens the file. It is the tenant's runtime key file (`loopze-certs
	// runtime-key` writes it), which opens that tenant's files and nothing else; it is read
	// again whenever it changes, so a runtime given its new key after a tenant key
	// rotation needs no restart. The master key file (loopze.key, with loopze.key.next
	// beside it during a rotation) is accepted too; it opens every tenant's files, so a
	// runtime should not hold it.
	KeyFile string
	// Tenant, when set, is the only tenant whose file is accepted; empty pins the tenant of
	// the first file loaded.
	Tenant string
	// FileRoots confines the paths of file material as LOOPZE_FILE_ROOTS does on the
	// server (":"-separated directories, "{tenant}" replaced). Empty allows any absolute
	// path to the default tenant and none to other tenants, as on the server.
	FileRoots string
	// OnRefused, when set, is called once for every changed file that is refused (torn,
	// tampered with, another tenant's, under an unknown key, older than one accepted
	// before, not a regular file, over MaxFileSize). The last good snapshot keeps
	// serving. It runs inside the Config call that noticed the change, holding the reload
	// (other calls that find the file changed wait for it, as long as their context
	// allows), and must not call the Store.
	OnRefused func(error)
	// Logger receives material warnings (expiry, weak keys) and refusals; nil discards.
	// Nothing this package logs carries PEM or key bytes.
	Logger *slog.Logger
	// RetryPause is the pause before a file pair that failed to load is read again (a
	// rotation caught between its two renames); zero means DefaultRetryPause.
	RetryPause time.Duration
	// Now is the clock for expiry warnings; nil means time.Now.
	Now func() time.Time
}

// Store holds one tenant's decrypted credentials.json in memory and turns its nodes' tls
// blocks into *tls.Config values. It follows the file: every Config call compares the
// file's identity (inode, size, modification time) with the loaded one and reloads when it
// changed, keeping the last good snapshot when the new file is refused. It reads only a
// regular file of at most MaxFileSize bytes, without blocking on anything else put in its
// place, and keeps the generation floor beside it (credentials.json.floor): the highest
// generation accepted, so an older copy put back is refused even after a restart. A Store
// is safe for concurrent use.
type Store struct {
	opts  Options
	roots material.Roots
	// ring holds the master keys when KeyFile is loopze.key; runtime holds the runtime key
	// otherwise, with the stat of the file it was read from.
	ring    *envelope.Ring
	runtime atomic.Pointer[runtimeKey]

	state atomic.Pointer[state]
	// reload is held by the one call reloading the file; others wait on it as long as
	// their context allows.
	reload chan struct{}
	closed atomic.Bool
}

// state is what the Store serves and what it last saw on disk. It is replaced, never
// mutated.
type state struct {
	snap *snapshot
	// seen identifies the file last looked at (loaded or refused).
	seen fs.FileInfo
	// err is why the file last looked at was refused; nil when it is the one loaded.
	err error
	// keys identifies the key files when err is ErrUnknownKey, so a key that arrives
	// after its file is noticed.
	keys [2]fs.FileInfo
}

// Open loads the credentials file at path with the key ring of keyPath (see
// Options.KeyFile).
func Open(path, keyPath string) (*Store, error) {
	return New(Options{File: path, KeyFile: keyPath})
}

// New loads the file Options names. The first load must succeed: there is no last good
// snapshot to fall back on yet. A file older than the generation floor beside it is
// refused with ErrStaleFile.
func New(opts Options) (*Store, error) {
	if opts.File == "" {
		return nil, errors.New("nodetls: Options.File (the credentials.json path) is required")
	}
	if opts.KeyFile == "" {
		return nil, errors.New("nodetls: Options.KeyFile (the runtime key file) is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	roots := material.ParseRoots(opts.FileRoots)
	if err := roots.Validate(); err != nil {
		return nil, fmt.Errorf("nodetls: file roots: %w", err)
	}
	s := &Store{opts: opts, roots: roots, reload: make(chan struct{}, 1)}
	if filepath.Base(opts.KeyFile) == envelope.KeyFile {
		ring, err := envelope.LoadExisting(filepath.Dir(opts.KeyFile), opts.Logger)
		if err != nil {
			return nil, fmt.Errorf("nodetls: key file %s: %w", opts.KeyFile, err)
		}
		s.ring = ring
	} else if _, err := s.readRuntimeKey(context.Background()); err != nil {
		return nil, fmt.Errorf("nodetls: %w", err)
	}
	info, err := os.Stat(opts.File)
	if err != nil {
		return nil, fmt.Errorf("nodetls: %w %s: %w", ErrFileMissing, opts.File, err)
	}
	snap, err := s.load(context.Background(), nil)
	if err != nil {
		return nil, fmt.Errorf("nodetls: %w", err)
	}
	s.state.Store(&state{snap: snap, seen: info})
	return s, nil
}

// Generation is the generation of the snapshot being served.
func (s *Store) Generation() int64 { return s.state.Load().snap.generation }

// Tenant is the tenant of the snapshot being served.
func (s *Store) Tenant() string { return s.state.Load().snap.tenant }

// Err reports why the file on disk is not the snapshot being served: nil when it is, else
// the refusal (ErrNotCredentialsFile, ErrTampered, ErrWrongTenant, ErrUnknownKey,
// ErrStaleFile, ErrFileMissing, ErrTooLarge). ErrStaleFile names the file's generation and
// the one it is older than. It reflects the file as of the last Config, Describe or
// Refresh call.
func (s *Store) Err() error { return s.state.Load().err }

// Refresh checks the file now, as every Config call does, and returns Err.
func (s *Store) Refresh() error {
	if _, err := s.current(context.Background()); err != nil {
		return err
	}
	return s.Err()
}

// Close drops the snapshot; later calls return ErrClosed.
func (s *Store) Close() error {
	s.closed.Store(true)
	s.reload <- struct{}{}
	defer func() { <-s.reload }()
	if st := s.state.Load(); st != nil {
		s.state.Store(&state{snap: &snapshot{tenant: st.snap.tenant, generation: st.snap.generation}, seen: st.seen})
	}
	return nil
}

// current returns the snapshot to serve, reloading first when the file changed. It waits
// for a reload another call is making no longer than ctx allows.
func (s *Store) current(ctx context.Context) (*snapshot, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	st := s.state.Load()
	info, statErr := os.Stat(s.opts.File)
	if statErr == nil && sameFile(st.seen, info) && !s.keysChanged(st) {
		return st.snap, nil
	}
	select {
	case s.reload <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("reload %s: %w", s.opts.File, ctx.Err())
	}
	defer func() { <-s.reload }()
	if s.closed.Load() {
		return nil, ErrClosed
	}
	st = s.state.Load()
	if statErr != nil {
		if !errors.Is(st.err, ErrFileMissing) { // report the disappearance once
			err := fmt.Errorf("%w %s: %w", ErrFileMissing, s.opts.File, statErr)
			s.refused(err)
			s.state.Store(&state{snap: st.snap, err: err})
		}
		return st.snap, nil
	}
	if sameFile(st.seen, info) && !s.keysChanged(st) {
		return st.snap, nil // another caller reloaded it meanwhile
	}
	snap, err := s.load(ctx, st.snap)
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		// Not a verdict on the file: the next call reads it again.
		return nil, fmt.Errorf("reload %s: %w", s.opts.File, err)
	}
	if err != nil {
		next := &state{snap: st.snap, seen: info, err: err}
		if errors.Is(err, ErrUnknownKey) {
			next.keys = s.keyInfo()
		}
		s.refused(err)
		s.state.Store(next)
		return st.snap, nil
	}
	if snap.generation != st.snap.generation || snap.keyID != st.snap.keyID {
		s.opts.Logger.Info("credentials file reloaded", "path", s.opts.File, "tenant", snap.tenant,
			"generation", snap.generation, "previous_generation", st.snap.generation, "key_id", snap.keyID)
	}
	s.state.Store(&state{snap: snap, seen: info})
	return snap, nil
}

func (s *Store) refused(err error) {
	s.opts.Logger.Warn("credentials file refused; the last good snapshot keeps serving", "path", s.opts.File, "err", err)
	if s.opts.OnRefused != nil {
		s.opts.OnRefused(err)
	}
}

// keysChanged reports whether a file refused for its unknown key could now open: the key
// files changed since.
func (s *Store) keysChanged(st *state) bool {
	if !errors.Is(st.err, ErrUnknownKey) {
		return false
	}
	now := s.keyInfo()
	for i := range now {
		if (now[i] == nil) != (st.keys[i] == nil) || (now[i] != nil && !sameFile(st.keys[i], now[i])) {
			return true
		}
	}
	return false
}

func (s *Store) keyInfo() [2]fs.FileInfo {
	var out [2]fs.FileInfo
	if s.ring == nil {
		if info, err := os.Stat(s.opts.KeyFile); err == nil {
			out[0] = info
		}
		return out
	}
	dir := filepath.Dir(s.opts.KeyFile)
	for i, name := range []string{envelope.KeyFile, envelope.NextKeyFile} {
		if info, err := os.Stat(filepath.Join(dir, name)); err == nil {
			out[i] = info
		}
	}
	return out
}

func sameFile(a, b fs.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// load reads, decrypts and indexes the file. prev is the snapshot being served, nil at
// the first load: a file for another tenant, or older than prev or the generation floor,
// is refused. A file taken raises the floor.
func (s *Store) load(ctx context.Context, prev *snapshot) (*snapshot, error) {
	path := s.opts.File
	data, err := readFile(ctx, path, MaxFileSize)
	switch {
	case errors.Is(err, errNotRegular):
		return nil, fmt.Errorf("load %s: %w: %w", path, ErrNotCredentialsFile, err)
	case errors.Is(err, ErrTooLarge), err != nil && ctx.Err() != nil:
		return nil, fmt.Errorf("load %s: %w", path, err)
	case err != nil:
		return nil, fmt.Errorf("%w %s: %w", ErrFileMissing, path, err)
	}
	tenant := s.opts.Tenant
	if tenant == "" && prev != nil {
		tenant = prev.tenant
	}
	keys, err := s.keys(ctx, false)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	doc, h, err := credfile.Open(keys, data, tenant)
	if errors.Is(err, envelope.ErrUnknownKey) {
		// A key rotation wrote loopze.key.next (or promoted it), or the runtime was given
		// its new runtime key, since the keys were read.
		if keys, err = s.keys(ctx, true); err != nil {
			return nil, fmt.Errorf("load %s: %w", path, err)
		}
		doc, h, err = credfile.Open(keys, data, tenant)
	}
	if err != nil {
		return nil, fileError(path, err)
	}
	if err := checkFloor(ctx, path, h.Tenant, h.Generation); err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	if prev != nil && h.Generation < prev.generation {
		return nil, fmt.Errorf("load %s: %w: generation %d, while generation %d is loaded", path, ErrStaleFile, h.Generation, prev.generation)
	}
	snap, err := s.newSnapshot(doc, h)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	if err := raiseFloor(ctx, path, h.Tenant, h.Generation); err != nil {
		// The file is good; only an older one put back after a restart would go unnoticed.
		s.opts.Logger.Warn("generation floor not recorded", "path", path, "generation", h.Generation, "err", err)
	}
	return snap, nil
}

// snapshot is one decrypted file, indexed for Config. It holds PEM and keys in memory and
// never prints them.
type snapshot struct {
	tenant     string
	generation int64
	keyID      string
	entries    map[string]*credfile.Entry
	// lookup is each entry as the resolver looks it up, built once with the snapshot.
	lookup map[string]*resolver.Entry
	nodes  map[nodeKey]*refs.Node

	// resolver resolves blocks against this snapshot's entries; it parses each inline
	// entry once (the cache is the snapshot's), and reads file material at every call.
	resolver *resolver.Resolver
}

type nodeKey struct{ flow, node string }

func (s *Store) newSnapshot(doc *credfile.Document, h credfile.Header) (*snapshot, error) {
	snap := &snapshot{
		tenant: h.Tenant, generation: h.Generation, keyID: h.KeyID,
		entries: make(map[string]*credfile.Entry, len(doc.Entries)),
		lookup:  make(map[string]*resolver.Entry, len(doc.Entries)),
		nodes:   map[nodeKey]*refs.Node{},
	}
	snap.resolver = &resolver.Resolver{Entries: snap, Roots: s.roots, Logger: s.opts.Logger,
		Now: s.opts.Now, RetryPause: s.opts.RetryPause}
	for i := range doc.Entries {
		e := &doc.Entries[i]
		snap.entries[e.ID] = e
		// A snapshot's material never changes, and its resolver (with its cache) is its own.
		snap.lookup[e.ID] = &resolver.Entry{ID: e.ID, Type: material.Kind(e.Type), Source: e.Source, Handle: e,
			Files: material.Paths{Cert: e.CertPath, Key: e.KeyPath, Passphrase: e.PassphraseFile}}
	}
	if len(doc.Workspace) == 0 {
		return snap, nil
	}
	ws, err := refs.Parse(doc.Workspace)
	if err != nil {
		return nil, fmt.Errorf("%w: deployed workspace: %w", ErrNotCredentialsFile, err)
	}
	byID := map[string]*refs.Node{}
	for _, f := range ws.Flows {
		for _, n := range f.Nodes {
			snap.nodes[nodeKey{f.ID, n.ID}] = n
			byID[n.ID] = n
		}
	}
	// Inline PEM of tls blocks lives beside the workspace as node credentials named
	// "tls.<field>", as the deploy stores it.
	for _, c := range doc.NodeCredentials {
		n := byID[c.NodeID]
		field, ok := cutTLS(c.Name)
		if n == nil || n.TLS == nil || !ok {
			continue
		}
		v, err := c.Bytes()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNotCredentialsFile, err)
		}
		for _, p := range refs.Parts {
			sp := n.TLS.Spec(p)
			switch {
			case field == p.CertPEM:
				sp.CertPEM = &refs.Value{Text: secret.String(v)}
			case field == p.KeyPEM && p.KeyPEM != "":
				sp.KeyPEM = &refs.Value{Text: secret.String(v)}
			}
		}
	}
	return snap, nil
}

// runtimeKey is a runtime key file as last read, with the stat that identified it.
type runtimeKey struct {
	info fs.FileInfo
	key  *credfile.RuntimeKey
}

// maxKeyFileSize bounds a runtime key file: a few hundred bytes a tenant key version.
const maxKeyFileSize = 1 << 20

// readRuntimeKey reads the runtime key file, regular and bounded as the credentials file.
func (s *Store) readRuntimeKey(ctx context.Context) (*credfile.RuntimeKey, error) {
	path := s.opts.KeyFile
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	data, err := readFile(ctx, path, maxKeyFileSize)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	defer clear(data)
	if !credfile.IsRuntimeKey(data) {
		return nil, fmt.Errorf("key file %s is neither a runtime key file nor named %s (the master key)", path, envelope.KeyFile)
	}
	k, err := credfile.ParseRuntimeKey(data)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	s.runtime.Store(&runtimeKey{info: info, key: k})
	return k, nil
}

// keys are what open the credentials file: the master keys, or the runtime key. again
// reads them again (reloads the ring, or re-reads a runtime key file that changed).
func (s *Store) keys(ctx context.Context, again bool) (credfile.Keys, error) {
	if s.ring != nil {
		if again {
			if err := s.ring.Reload(); err != nil {
				return credfile.Keys{}, fmt.Errorf("reload key file %s: %w", s.opts.KeyFile, err)
			}
		}
		return credfile.Keys{Ring: s.ring}, nil
	}
	rk := s.runtime.Load()
	if info, err := os.Stat(s.opts.KeyFile); again || err != nil || !sameFile(rk.info, info) {
		k, err := s.readRuntimeKey(ctx)
		if err != nil {
			return credfile.Keys{}, err
		}
		return credfile.Keys{FileKey: k.FileKey}, nil
	}
	return credfile.Keys{FileKey: rk.key.FileKey}, nil
}
