package api_test

import (
	"testing"

	"github.com/loopze/certstore/internal/testdb"
)

func testdbDump(t *testing.T, url string) []byte { return testdb.Dump(t, url) }
