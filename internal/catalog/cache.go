package catalog

import (
	"context"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/maypok86/otter/v2"

	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/repo"
)

// DefaultCacheBytes bounds a Cache's memory unless Cache.MaxBytes says otherwise.
const DefaultCacheBytes = 32 << 20

// Cache keeps what the catalogue reads (entries by ID, list pages, reference pages and
// counts, the entries connection init looks up) in process, keyed by tenant and by the
// tenant's generation read before the data, so that a tenant that did not change is
// answered without PostgreSQL. Every change moves the tenant's generation in its
// transaction and notifies every replica; the export job's listener tells the Cache
// (Changed), and so does the Service that committed, at once (read your writes). While the
// listener is down (Disconnected) every read goes to the database, until it is back and
// has reconciled (Connected).
//
// A value is stored only when no change of its tenant was announced while it was read,
// and is served only while the generation it was stored under is the newest this process
// knows of, so nothing older than an announced change is ever served. The zero Cache is
// ready and bypassed until Connected.
type Cache struct {
	// MaxBytes bounds the memory of the cached values (an estimate); DefaultCacheBytes when
	// zero.
	MaxBytes int64

	once sync.Once
	c    *otter.Cache[cacheKey, cached]

	mu      sync.Mutex
	up      bool
	epoch   uint64 // moves whenever everything must be read again
	tenants map[string]*tenantView
}

// tenantView is what the Cache knows of a tenant's generation.
type tenantView struct {
	changes uint64 // announced changes
	gen     int64  // the newest generation read since the last announced change
	known   bool
}

type queryKind uint8

const (
	qGet queryKind = iota + 1
	qList
	qRefs
	qLookup
	qRefusal
)

// query names one read of a tenant.
type query struct {
	kind   queryKind
	id     string
	filter listKey
	after  repo.RefCursor
	cursor bool
	limit  int
}

// listKey is a repo.ListFilter as a comparable value.
type listKey struct {
	typ, source, after, search string
	expiringBy                 int64
	expiring, withoutTotal     bool
	limit                      int
}

func newListKey(f repo.ListFilter) listKey {
	k := listKey{typ: f.Type, source: f.Source, after: f.After, search: f.Search, limit: f.Limit, withoutTotal: f.WithoutTotal}
	if f.ExpiringBy != nil {
		k.expiring, k.expiringBy = true, f.ExpiringBy.UnixNano()
	}
	return k
}

type cacheKey struct {
	epoch  uint64
	tenant string
	gen    int64
	q      query
}

// cached is one stored answer with its estimated size.
type cached struct {
	v    any
	size uint32
}

type listPage struct {
	entries []*repo.Entry
	more    bool
}

type refsPage struct {
	refs  []repo.Reference
	total int
}

// lookedUp is one entry of a Lookup, nil when the tenant has none by that ID.
type lookedUp struct{ e *repo.Entry }

func (c *Cache) store() *otter.Cache[cacheKey, cached] {
	c.once.Do(func() {
		size := c.MaxBytes
		if size <= 0 {
			size = DefaultCacheBytes
		}
		c.c = otter.Must(&otter.Options[cacheKey, cached]{
			MaximumWeight: uint64(size),
			Weigher:       weigh,
			Executor:      func(fn func()) { fn() },
		})
	})
	return c.c
}

// weigh is what one stored answer counts against MaxBytes: its value's estimate, its key's
// strings and keyOverhead.
func weigh(k cacheKey, v cached) uint32 {
	return v.size + uint32(len(k.tenant)+len(k.q.id)) + keyOverhead
}

// keyOverhead is what otter keeps per stored answer besides the value: its node, which
// holds the cacheKey (208 bytes) and the cached value by value, and its hash table slot
// (TestCacheWeightCoversHeap measures it).
const keyOverhead = 384

// token is what a read saw of the Cache when it began.
type token struct {
	epoch, changes uint64
	gen            int64
	known          bool
}

func (c *Cache) begin(tenant string) (token, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.up {
		return token{}, false
	}
	t := token{epoch: c.epoch}
	if v, ok := c.tenants[tenant]; ok {
		t.changes, t.gen, t.known = v.changes, v.gen, v.known
	}
	return t, true
}

// finish records that a read which began with t found the tenant at gen. It reports
// whether the answer may be stored: no change was announced meanwhile.
func (c *Cache) finish(tenant string, t token, gen int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.up || c.epoch != t.epoch {
		return false
	}
	v, ok := c.tenants[tenant]
	if !ok {
		if t.changes != 0 {
			return false
		}
		if c.tenants == nil {
			c.tenants = map[string]*tenantView{}
		}
		v = &tenantView{}
		c.tenants[tenant] = v
	}
	if v.changes != t.changes {
		return false
	}
	if !v.known || gen > v.gen {
		v.gen, v.known = gen, true
	}
	return gen == v.gen
}

// read answers q from the cache when the tenant's generation is known and the answer was
// stored under it, and from load otherwise; load's answer is stored under the generation
// read before it, or known before it.
func read[T any](ctx context.Context, s *Service, tenant string, q query, size func(T) int, load func() (T, error)) (T, error) {
	c := s.Cache
	t, on := c.begin(tenant)
	if !on {
		return load()
	}
	store := c.store()
	if t.known {
		if v, ok := store.GetIfPresent(cacheKey{t.epoch, tenant, t.gen, q}); ok {
			return v.v.(T), nil
		}
	}
	// The generation first, then the data: the data is at least as new as the
	// generation it is stored under. While the tenant's generation is known (no change
	// announced since it was read), it is the one to store under, without a round trip:
	// data read now is at least that new, and any change that makes it newer is
	// announced, which moves the tenant off that generation before it is served again.
	gen := t.gen
	if !t.known {
		var err error
		if gen, err = repo.GetGeneration(ctx, s.Pool, tenant); err != nil {
			var zero T
			return zero, err
		}
	}
	v, err := load()
	if err != nil {
		return v, err
	}
	if c.finish(tenant, t, gen) {
		store.Set(cacheKey{t.epoch, tenant, gen, q}, cached{v: v, size: uint32(min(size(v), 1<<30))})
	}
	return v, nil
}

// Changed says that tenant changed (a notification arrived, or this process committed a
// change): nothing read before is served again.
func (c *Cache) Changed(tenant string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tenants == nil {
		c.tenants = map[string]*tenantView{}
	}
	v, ok := c.tenants[tenant]
	if !ok {
		v = &tenantView{}
		c.tenants[tenant] = v
	}
	v.changes++
	v.known = false
}

// Disconnected says the listener lost its connection: notifications may be missed, so
// every read goes to the database until Connected.
func (c *Cache) Disconnected() { c.reset(false) }

// Connected says the listener listens again and a full reconcile ran: the Cache starts
// over and serves again.
func (c *Cache) Connected() { c.reset(true) }

// KeysChanged says the master keys changed (a rotation rewrapped the sealed material
// without moving any generation): the Cache starts over.
func (c *Cache) KeysChanged() {
	c.mu.Lock()
	up := c.up
	c.mu.Unlock()
	c.reset(up)
}

func (c *Cache) reset(up bool) {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.up = up
	c.epoch++
	c.tenants = nil
	c.mu.Unlock()
	c.store().InvalidateAll()
}

// Serving reports whether the Cache answers reads (the listener is up).
func (c *Cache) Serving() bool {
	if c == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.up
}

// References pages through the references to an entry and counts them; ErrNotFound when
// the entry does not exist in the tenant.
func (s *Service) References(ctx context.Context, tenant, id string, after *repo.RefCursor, limit int) ([]repo.Reference, int, error) {
	if s.Cache != nil {
		return s.cachedReferences(ctx, tenant, id, after, limit)
	}
	return s.references(ctx, tenant, id, after, limit)
}

// changed tells the Service's Cache, if any, that tenant changed, and its Chainer that
// the change's audit record awaits chaining.
func (s *Service) changed(tenant string) {
	if s.Cache != nil {
		s.Cache.Changed(tenant)
	}
	s.Chainer.Kick(tenant)
}

func entrySize(e *repo.Entry) int {
	if e == nil {
		return 16
	}
	// The struct itself (440 bytes on 64-bit) and the size-class rounding of its dozen
	// strings, each allocated on its own when pgx scans the row.
	n := 512 + len(e.ID) + len(e.Name) + len(e.Notes) + len(e.CertPath) + len(e.KeyPath) + len(e.Sealed.Cert) + len(e.Sealed.Key) +
		len(e.Meta.Subject) + len(e.Meta.Issuer) + len(e.Meta.SerialNumber) + len(e.Meta.FingerprintSHA256)
	for _, d := range e.Meta.DNSNames {
		n += len(d) + 16
	}
	return n
}

// copyEntry returns a copy callers may change without changing the cached one.
func copyEntry(e *repo.Entry) *repo.Entry {
	if e == nil {
		return nil
	}
	c := *e
	return &c
}

func (s *Service) cachedGet(ctx context.Context, tenant, id string) (*repo.Entry, error) {
	e, err := read(ctx, s, tenant, query{kind: qGet, id: id}, entrySize, func() (*repo.Entry, error) {
		return repo.GetEntry(ctx, s.Pool, tenant, id)
	})
	if err != nil {
		return nil, err
	}
	return copyEntry(e), nil
}

func (s *Service) cachedList(ctx context.Context, tenant string, f repo.ListFilter) ([]*repo.Entry, bool, error) {
	p, err := read(ctx, s, tenant, query{kind: qList, filter: newListKey(f)},
		func(p listPage) int {
			n := 64
			for _, e := range p.entries {
				n += entrySize(e)
			}
			return n
		},
		func() (listPage, error) {
			entries, more, err := repo.ListEntries(ctx, s.Pool, tenant, f)
			return listPage{entries, more}, err
		})
	if err != nil {
		return nil, false, err
	}
	out := make([]*repo.Entry, len(p.entries))
	for i, e := range p.entries {
		out[i] = copyEntry(e)
	}
	return out, p.more, nil
}

func refsSize(p refsPage) int {
	n := 64
	for _, r := range p.refs {
		n += 80 + len(r.EntryID) + len(r.FlowID) + len(r.NodeID) + len(r.NodeType) + len(r.Field)
	}
	return n
}

func (s *Service) cachedReferences(ctx context.Context, tenant, id string, after *repo.RefCursor, limit int) ([]repo.Reference, int, error) {
	q := query{kind: qRefs, id: id, limit: limit}
	if after != nil {
		q.after, q.cursor = *after, true
	}
	p, err := read(ctx, s, tenant, q, refsSize, func() (refsPage, error) {
		refs, total, err := s.references(ctx, tenant, id, after, limit)
		return refsPage{refs, total}, err
	})
	if err != nil {
		return nil, 0, err
	}
	return append([]repo.Reference(nil), p.refs...), p.total, nil
}

// cachedRefusal answers whether a delete of id would be refused for its references, with
// the first MaxConflictReferences of them.
func (s *Service) cachedRefusal(ctx context.Context, tenant, id string) (*ReferencedError, error) {
	p, err := read(ctx, s, tenant, query{kind: qRefusal, id: id}, refsSize, func() (refsPage, error) {
		refs, total, err := s.refusal(ctx, tenant, id)
		return refsPage{refs, total}, err
	})
	if err != nil || p.total == 0 {
		return nil, err
	}
	return &ReferencedError{EntryID: id, References: append([]repo.Reference(nil), p.refs...), Total: p.total}, nil
}

func (s *Service) cachedLookup(ctx context.Context, tenant string, ids []string) ([]*repo.Entry, error) {
	out := make([]*repo.Entry, 0, len(ids))
	if t, on := s.Cache.begin(tenant); on && t.known {
		store := s.Cache.store()
		hit := true
		for _, id := range ids {
			v, ok := store.GetIfPresent(cacheKey{t.epoch, tenant, t.gen, query{kind: qLookup, id: id}})
			if !ok {
				hit = false
				break
			}
			if e := v.v.(lookedUp).e; e != nil {
				out = append(out, copyEntry(e))
			}
		}
		if hit {
			return out, nil
		}
	}
	// Every ID is read again, in the one round trip connection init pays for.
	t, on := s.Cache.begin(tenant)
	if !on {
		return repo.LookupEntries(ctx, s.Pool, tenant, ids)
	}
	gen, err := repo.GetGeneration(ctx, s.Pool, tenant)
	if err != nil {
		return nil, err
	}
	list, err := repo.LookupEntries(ctx, s.Pool, tenant, ids)
	if err != nil {
		return nil, err
	}
	if s.Cache.finish(tenant, t, gen) {
		found := make(map[string]*repo.Entry, len(list))
		for _, e := range list {
			found[e.ID] = e
		}
		store := s.Cache.store()
		for _, id := range ids {
			e := found[id]
			store.Set(cacheKey{t.epoch, tenant, gen, query{kind: qLookup, id: id}}, cached{v: lookedUp{e}, size: uint32(entrySize(e))})
		}
	}
	out = out[:0]
	for _, e := range list {
		out = append(out, copyEntry(e))
	}
	return out, nil
}

// refusal counts the references to id and lists the first MaxConflictReferences of them.
func (s *Service) refusal(ctx context.Context, tenant, id string) ([]repo.Reference, int, error) {
	var (
		refs []repo.Reference
		n    int
	)
	err := db.InTenant(ctx, s.Pool, tenant, func(tx pgx.Tx) error {
		var err error
		n, err = repo.CountReferences(ctx, tx, tenant, id)
		if err != nil || n == 0 {
			return err
		}
		refs, err = repo.ListReferences(ctx, tx, tenant, id, nil, MaxConflictReferences)
		return err
	})
	return refs, max(n, len(refs)), err
}

// readRefusal is the *ReferencedError a delete of id meets, nil when nothing references it.
func (s *Service) readRefusal(ctx context.Context, tenant, id string) (*ReferencedError, error) {
	if s.Cache != nil {
		return s.cachedRefusal(ctx, tenant, id)
	}
	refs, n, err := s.refusal(ctx, tenant, id)
	if err != nil || n == 0 {
		return nil, err
	}
	return &ReferencedError{EntryID: id, References: refs, Total: n}, nil
}
