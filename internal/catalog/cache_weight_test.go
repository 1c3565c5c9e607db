package catalog

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/sealing"
)

// heapEntry is an entry as GET reads it (no sealed columns), each string allocated on its
// own the way pgx scans them.
func heapEntry(tenant string, i int) *repo.Entry {
	c := strings.Clone
	id := fmt.Sprintf("e-%06d", i)
	now := time.Now()
	return &repo.Entry{TenantID: c(tenant), ID: c(id), Name: c("client " + id), Type: material.ClientPair, Source: c("inline"),
		Sealed: sealing.Pair{KeyID: c("k-20261127T000000Z")}, Version: 1, CreatedAt: now, UpdatedAt: now,
		Meta: material.Metadata{
			FingerprintSHA256: c(strings.Repeat("AB:", 31) + "CD"), Subject: c("CN=" + id + ",O=Acme Devices"),
			Issuer: c("CN=Acme Intermediate CA,O=Acme"), SerialNumber: c(strings.Repeat("8F:", 15) + "01"),
			NotBefore: now, NotAfter: now.Add(time.Hour), DNSNames: []string{c(id + ".devices.example")},
			CertCount: 2, KeyAlgorithm: c("ECDSA-P256"), HasPrivateKey: true,
		}}
}

func liveHeap() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestCacheWeightCoversHeap: what the read cache counts against its budget for a stored
// GET is at least what the stored value, its key and otter's node take on the heap, so a
// full cache stays within DefaultCacheBytes.
func TestCacheWeightCoversHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("measures the heap")
	}
	const n = 20000
	c := &Cache{MaxBytes: 1 << 30}
	store := c.store()
	before := liveHeap()
	var weight uint64
	for i := range n {
		// Each key and value is built when stored, as a GET does: the request's tenant and
		// ID, the entry and its strings all count.
		e := heapEntry("tenant-0001", i)
		k := cacheKey{epoch: 1, tenant: strings.Clone(e.TenantID), gen: 7, q: query{kind: qGet, id: strings.Clone(e.ID)}}
		v := cached{v: e, size: uint32(entrySize(e))}
		weight += uint64(weigh(k, v))
		store.Set(k, v)
	}
	after := liveHeap()
	require := func(cond bool, format string, args ...any) {
		t.Helper()
		if !cond {
			t.Fatalf(format, args...)
		}
	}
	require(store.EstimatedSize() == n, "stored %d of %d", store.EstimatedSize(), n)
	heap := after - before
	t.Logf("heap per stored GET %d B, weight %d B", heap/n, weight/n)
	require(weight >= heap, "weight %d B per entry is below its heap %d B", weight/n, heap/n)
	// And not wildly above it either, or the budget holds far less than it could.
	require(weight <= 2*heap, "weight %d B per entry is more than twice its heap %d B", weight/n, heap/n)
}
