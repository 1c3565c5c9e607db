package api_test

import (
	"os"
	"testing"

	"github.com/loopze/certstore/internal/apitest"

	"github.com/loopze/certstore/internal/testdb"
)

func testdbDump(t *testing.T, url string) []byte { return testdb.Dump(t, url) }

// tempRoots sets LOOPZE_FILE_ROOTS to the directory test files are written under, for
// tests of tenants other than the default that read files: without roots they may not.
func tempRoots() apitest.Options { return apitest.Options{FileRoots: os.TempDir()} }
