package fileexport

import (
	"fmt"
	"sync/atomic"

	"github.com/maypok86/otter/v2"

	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/sealing"
)

// DefaultEncodedCacheBytes bounds the memory of an Exporter's cache of encoded entries and
// node credentials unless Exporter.EncodedCacheBytes says otherwise. 32 MiB holds a tenant
// of about 12,000 inline pairs (an encoded pair weighs about 2.6 KiB).
const DefaultEncodedCacheBytes = 32 << 20

// encodedCache remembers the JSON form each entry and node credential takes inside a
// document, keyed by where it lives and checked against a stamp of the row it came from, so
// an export opens and encodes only the rows that changed since the last one. Its values
// hold material in clear, like the document they go into: they are never logged and never
// leave the package.
type encodedCache struct {
	c *otter.Cache[encodedKey, *encodedValue]
	// encoded counts the values encoded (not found or stale): what an export paid for.
	encoded atomic.Int64
}

type encodedKind uint8

const (
	kindEntry encodedKind = iota + 1
	kindNodeCredential
)

// encodedKey names one entry (id) or one node credential (id is the node, name the
// credential) of a tenant.
type encodedKey struct {
	kind   encodedKind
	tenant string
	id     string
	name   string
}

// encodedValue is one element of the document's entries or nodeCredentials array, with the
// stamp of the row it was encoded from.
type encodedValue struct {
	stamp stamp
	json  []byte
}

// encodedOverhead is the bookkeeping of one cached value besides its bytes: the
// encodedValue (its stamp), otter's node holding the key, and its hash table slot
// (TestEncodedCacheWeightCoversHeap measures it).
const encodedOverhead = 320

// weighEncoded is what one cached value counts against the cache's budget.
func weighEncoded(k encodedKey, v *encodedValue) uint32 {
	n := cap(v.json) + len(k.tenant) + len(k.id) + len(k.name) + encodedOverhead
	return uint32(min(n, 1<<31))
}

func newEncodedCache(maxBytes int64) *encodedCache {
	if maxBytes <= 0 {
		return nil
	}
	return &encodedCache{c: otter.Must(&otter.Options[encodedKey, *encodedValue]{
		MaximumWeight: uint64(maxBytes),
		Weigher:       weighEncoded,
		// Evictions run inline: the cache starts no goroutines an Exporter would leak.
		Executor: func(fn func()) { fn() },
	})}
}

// get returns the cached form of key when its stamp still matches.
func (c *encodedCache) get(key encodedKey, st stamp) ([]byte, bool) {
	if c == nil {
		return nil, false
	}
	v, ok := c.c.GetIfPresent(key)
	if !ok || v.stamp != st {
		return nil, false
	}
	return v.json, true
}

func (c *encodedCache) put(key encodedKey, st stamp, data []byte) {
	if c != nil {
		c.encoded.Add(1)
		c.c.Set(key, &encodedValue{stamp: st, json: data})
	}
}

// stamp identifies the row an encoding was made from. An entry's is its row stamp (see
// repo.RowStamp), which moves with every write of the row, a restore and a rewrap under a
// new key included. A node credential has its sealed value's tag (envelope.Tag).
type stamp struct {
	row     uint32
	version int64
	updated int64
	sealed  [16]byte
}

func rowStamp(s repo.RowStamp) stamp {
	return stamp{row: s.XMin, version: s.Version, updated: s.UpdatedAt.UnixNano()}
}

func entryKey(tenant, id string) encodedKey {
	return encodedKey{kind: kindEntry, tenant: tenant, id: id}
}

// encodedCacheFor returns the Exporter's cache, made on first use.
func (x *Exporter) encodedCacheFor() *encodedCache {
	x.cacheOnce.Do(func() {
		size := x.EncodedCacheBytes
		if size == 0 {
			size = DefaultEncodedCacheBytes
		}
		x.cache = newEncodedCache(size)
	})
	return x.cache
}

// encodeEntry returns e's element of the document's entries array and keeps it under the
// stamp of the row it was read from.
func (x *Exporter) encodeEntry(tenant string, ring *envelope.Ring, e *repo.Entry, st stamp) ([]byte, error) {
	de, err := documentEntry(tenant, ring, e)
	if err != nil {
		return nil, err
	}
	b, err := credfile.EncodeEntry(de)
	if err != nil {
		return nil, err
	}
	x.encodedCacheFor().put(entryKey(tenant, e.ID), st, b)
	return b, nil
}

// encodeNodeCredential returns s's element of the document's nodeCredentials array, from
// the cache when its sealed bytes did not change.
func (x *Exporter) encodeNodeCredential(tenant string, ring *envelope.Ring, s repo.NodeSecret) ([]byte, error) {
	c := x.encodedCacheFor()
	key, st := encodedKey{kind: kindNodeCredential, tenant: tenant, id: s.NodeID, name: s.Name}, stamp{sealed: envelope.Tag(s.Sealed)}
	if b, ok := c.get(key, st); ok {
		return b, nil
	}
	plain, err := sealing.Open(ring, s.Sealed, sealing.NodeSecret(tenant, s.NodeID, s.Name))
	if err != nil {
		return nil, fmt.Errorf("open node %s credential %s: %w", s.NodeID, s.Name, err)
	}
	b, err := credfile.EncodeNodeCredential(credfile.NewNodeCredential(s.NodeID, s.Name, plain))
	clear(plain)
	if err != nil {
		return nil, err
	}
	c.put(key, st, b)
	return b, nil
}
