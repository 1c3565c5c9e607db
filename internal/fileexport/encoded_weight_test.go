package fileexport

import (
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/material"
)

func liveHeap() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestEncodedCacheWeightCoversHeap: what the encoded cache counts for an entry is at least
// what the entry's encoding, its key, its stamp and otter's node take on the heap, so a
// full cache stays within its budget.
func TestEncodedCacheWeightCoversHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("measures the heap")
	}
	const n = 5000
	c := newEncodedCache(1 << 30)
	before := liveHeap()
	var weight uint64
	for i := range n {
		id := fmt.Sprintf("e-%06d", i)
		b, err := json.Marshal(credfile.Entry{ID: id, Name: id, Type: "client-pair", Source: "inline",
			CertPEM: strings.Repeat("A", 1400), KeyPEM: strings.Repeat("B", 240), Metadata: material.Metadata{Subject: "CN=" + id,
				NotBefore: time.Now(), NotAfter: time.Now()}, CreatedAt: time.Now(), UpdatedAt: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		k := encodedKey{kind: kindEntry, tenant: strings.Clone("tenant-0001"), id: id}
		v := &encodedValue{stamp: stamp{version: 1}, json: b}
		weight += uint64(weighEncoded(k, v))
		c.put(k, v.stamp, b)
	}
	after := liveHeap()
	runtime.KeepAlive(c)
	heap := after - before
	t.Logf("heap per cached encoding %d B, weight %d B", heap/n, weight/n)
	if weight < heap {
		t.Fatalf("weight %d B per encoding is below its heap %d B", weight/n, heap/n)
	}
}
