package certstore_test

import (
	"bufio"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// promisesDoc maps every promise of the operator documentation to the tests that prove it.
const promisesDoc = "docs/operator-promises.md"

// testRef is how the document names a test: the package directory from the module root
// ("." for the root package), a slash, the test function ("internal/api/TestCreateRules").
var testRef = regexp.MustCompile("`(\\.|[a-z0-9_]+(?:/[a-z0-9_]+)*)/(Test[A-Za-z0-9_]*)`")

// noTest marks a promise that has no test, with the reason after it.
const noTest = "No test:"

// TestOperatorPromisesNameExistingTests fails when docs/operator-promises.md names a test
// that no longer exists (renamed, moved to another package, deleted), or lists a promise
// with neither a test nor a stated reason for having none.
func TestOperatorPromisesNameExistingTests(t *testing.T) {
	t.Parallel()
	f, err := os.Open(promisesDoc)
	require.NoError(t, err)
	defer f.Close()

	tests := map[string]map[string]bool{} // package dir to its test functions
	named := 0
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		row := sc.Text()
		if !isPromiseRow(row) {
			continue
		}
		refs := testRef.FindAllStringSubmatch(row, -1)
		if len(refs) == 0 {
			require.Contains(t, row, noTest, "%s:%d: a promise with no test must say why (%q)", promisesDoc, line, noTest)
			continue
		}
		for _, m := range refs {
			dir, name := m[1], m[2]
			if tests[dir] == nil {
				tests[dir] = testFuncs(t, dir)
			}
			require.True(t, tests[dir][name], "%s:%d: %s/%s: no such test function in %s", promisesDoc, line, dir, name, dir)
			named++
		}
	}
	require.NoError(t, sc.Err())
	require.Positive(t, named, "%s names no tests at all", promisesDoc)
}

// isPromiseRow reports whether line is a body row of a promise table: a table row that is
// neither the header ("| Promise | ...") nor the separator.
func isPromiseRow(line string) bool {
	line = strings.TrimSpace(line)
	if !strings.HasPrefix(line, "|") || strings.HasPrefix(line, "|---") || strings.HasPrefix(line, "| ---") {
		return false
	}
	return !strings.HasPrefix(line, "| Promise |")
}

// testFuncs parses the _test.go files of dir and returns the names of its top-level
// Test functions.
func testFuncs(t *testing.T, dir string) map[string]bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
	require.NoError(t, err)
	require.NotEmpty(t, files, "%s names the package %s, which has no tests", promisesDoc, dir)
	out := map[string]bool{}
	fset := token.NewFileSet()
	for _, path := range files {
		file, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		require.NoError(t, err)
		for _, d := range file.Decls {
			if fn, ok := d.(*ast.FuncDecl); ok && fn.Recv == nil && strings.HasPrefix(fn.Name.Name, "Test") {
				out[fn.Name.Name] = true
			}
		}
	}
	return out
}
