package certstore_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// domainPackages know nothing of HTTP (ARCHITECTURE.md): they return sentinel errors and
// internal/api maps them to status codes. A package listed here that does not exist (it
// moved or merged) is skipped; a new domain package belongs in the list.
var domainPackages = []string{
	"internal/catalog", "internal/workspace", "internal/refs", "internal/resolver", "internal/material",
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

// sqlOwners may hold SQL: repo (every query of the product), db (connections, migrations,
// the tenant scope of a transaction), and the PostgreSQL supervision, test harness and
// benchmark baselines, which talk to the server rather than to the product's tables.
var sqlOwners = []string{"internal/repo", "internal/db", "internal/pgembed", "internal/testdb", "bench"}

// sqlText is what a Go string holding SQL contains.
var sqlText = regexp.MustCompile(`\b(SELECT|INSERT INTO|UPDATE [a-z_]+ SET|DELETE FROM|CREATE TABLE|set_config|pg_notify)\b|^.LISTEN `)

// TestOnlyRepoHoldsSQL holds the second rule of the code map: no string literal outside
// sqlOwners reads like SQL.
func TestOnlyRepoHoldsSQL(t *testing.T) {
	t.Parallel()
	for _, dir := range packageDirs(t) {
		if slices.Contains(sqlOwners, dir) {
			continue
		}
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		require.NoError(t, err)
		fset := token.NewFileSet()
		for _, path := range files {
			if strings.HasSuffix(path, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			require.NoError(t, err)
			ast.Inspect(f, func(n ast.Node) bool {
				if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING && sqlText.MatchString(lit.Value) {
					t.Errorf("%s holds SQL: queries belong in internal/repo (see ARCHITECTURE.md)", fset.Position(lit.Pos()))
				}
				return true
			})
		}
	}
}

// TestDocsNameEveryPackage keeps the README's layout and ARCHITECTURE.md's code map
// complete: every directory holding a Go package is named in both.
func TestDocsNameEveryPackage(t *testing.T) {
	t.Parallel()
	dirs := packageDirs(t)
	for _, doc := range []string{"README.md", "ARCHITECTURE.md"} {
		text, err := os.ReadFile(doc)
		require.NoError(t, err)
		for _, dir := range dirs {
			require.True(t, strings.Contains(string(text), "`"+dir), "%s does not name the package %s", doc, dir)
		}
	}
}

// packageDirs lists the directories, relative to the module root, that hold a Go package
// other than the root's own tests.
func packageDirs(t *testing.T) []string {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != "." && (strings.HasPrefix(name, ".") || name == "data" || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if path != filepath.Base(path) && strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			if dir := filepath.ToSlash(filepath.Dir(path)); !slices.Contains(dirs, dir) {
				dirs = append(dirs, dir)
			}
		}
		return nil
	})
	require.NoError(t, err)
	require.NotEmpty(t, dirs)
	return dirs
}
