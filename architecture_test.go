package certstore_test

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// domainPackages know nothing of HTTP (ARCHITECTURE.md): they return sentinel errors and
// internal/api maps them to status codes. A package listed here that does not exist (it
// moved or merged) is skipped; a new domain package belongs in the list.
var domainPackages = []string{
	"internal/catalog", "internal/workspace", "internal/refs", "internal/material",
	"internal/envelope", "internal/sealing", "internal/durable", "internal/secret",
	"internal/repo", "internal/db", "internal/fileexport", "internal/keyrotation",
	"internal/doctor", "internal/opcua", "internal/config", "internal/logging",
}

// TestDomainPackagesDoNotImportHTTP holds the first rule of the code map.
func TestDomainPackagesDoNotImportHTTP(t *testing.T) {
	t.Parallel()
	checked := 0
	for _, dir := range domainPackages {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		require.NoError(t, err)
		fset := token.NewFileSet()
		for _, path := range files {
			if strings.HasSuffix(path, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
			require.NoError(t, err)
			for _, imp := range f.Imports {
				p, err := strconv.Unquote(imp.Path.Value)
				require.NoError(t, err)
				require.False(t, p == "net/http" || strings.HasPrefix(p, "net/http/"),
					"%s imports %s: a domain package must not know HTTP (see ARCHITECTURE.md)", path, p)
			}
			checked++
		}
	}
	require.Positive(t, checked, "none of the domain packages is where this test looks")
}
