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

// declared is every identifier the module's packages declare: package names, and per
// package its types, functions, constants, variables, methods (Type.Method) and struct
// fields (Type.Field).
type declared struct {
	packages map[string]bool            // package name
	byPkg    map[string]map[string]bool // package name -> Name, Type.Member
	anywhere map[string]bool            // Name and Type.Member, in any package
}

func declarations(t *testing.T) declared {
	t.Helper()
	d := declared{packages: map[string]bool{}, byPkg: map[string]map[string]bool{}, anywhere: map[string]bool{}}
	fset := token.NewFileSet()
	for _, dir := range append(packageDirs(t), ".") {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		require.NoError(t, err)
		for _, file := range files {
			f, err := parser.ParseFile(fset, file, nil, parser.SkipObjectResolution)
			require.NoError(t, err)
			pkg := f.Name.Name
			d.packages[pkg] = true
			if d.byPkg[pkg] == nil {
				d.byPkg[pkg] = map[string]bool{}
			}
			add := func(name string) {
				d.byPkg[pkg][name] = true
				d.anywhere[name] = true
			}
			for _, decl := range f.Decls {
				switch decl := decl.(type) {
				case *ast.FuncDecl:
					if decl.Recv == nil {
						add(decl.Name.Name)
						continue
					}
					recv := decl.Recv.List[0].Type
					if star, ok := recv.(*ast.StarExpr); ok {
						recv = star.X
					}
					if idx, ok := recv.(*ast.IndexExpr); ok {
						recv = idx.X
					}
					if id, ok := recv.(*ast.Ident); ok {
						add(id.Name + "." + decl.Name.Name)
						add(decl.Name.Name)
					}
				case *ast.GenDecl:
					for _, spec := range decl.Specs {
						switch spec := spec.(type) {
						case *ast.TypeSpec:
							add(spec.Name.Name)
							if st, ok := spec.Type.(*ast.StructType); ok {
								for _, field := range st.Fields.List {
									for _, n := range field.Names {
										add(spec.Name.Name + "." + n.Name)
									}
									if len(field.Names) == 0 { // embedded: its type's name
										typ := field.Type
										if star, ok := typ.(*ast.StarExpr); ok {
											typ = star.X
										}
										if sel, ok := typ.(*ast.SelectorExpr); ok {
											add(spec.Name.Name + "." + sel.Sel.Name)
										} else if id, ok := typ.(*ast.Ident); ok {
											add(spec.Name.Name + "." + id.Name)
										}
									}
								}
							}
						case *ast.ValueSpec:
							for _, n := range spec.Names {
								add(n.Name)
							}
						}
					}
				}
			}
		}
	}
	return d
}

// goName is what ARCHITECTURE.md writes in backticks when it names code: an identifier,
// possibly qualified (pkg.Name, Type.Method, pkg.Type.Method), possibly called.
var goName = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)(\.[A-Za-z_][A-Za-z0-9_]*)*(\(\))?$`)

// TestArchitectureNamesOnlyWhatExists keeps ARCHITECTURE.md true as the code moves: every
// identifier it names in backticks that looks like Go (a name with a capital letter, or a
// name qualified by one of the module's packages) is declared in the code, and every path
// of the repository it names exists.
func TestArchitectureNamesOnlyWhatExists(t *testing.T) {
	t.Parallel()
	text, err := os.ReadFile("ARCHITECTURE.md")
	require.NoError(t, err)
	d := declarations(t)
	var stale []string
	for _, m := range regexp.MustCompile("`([^`\n]+)`").FindAllStringSubmatch(string(text), -1) {
		tok := m[1]
		switch {
		case strings.HasPrefix(tok, "internal/") || strings.HasPrefix(tok, "cmd/") || strings.HasPrefix(tok, "scripts/") ||
			strings.HasPrefix(tok, "docs/") || strings.HasPrefix(tok, "examples/") || tok == "bench/" || tok == "migrations/":
			if _, err := os.Stat(strings.TrimSuffix(tok, "/")); err != nil {
				stale = append(stale, tok)
			}
			continue
		case strings.HasPrefix(tok, "LOOPZE_"):
			continue // settings: the README's table and the config tests hold them
		case strings.HasSuffix(tok, ".go") && !strings.Contains(tok, " "):
			if matches, _ := filepath.Glob(filepath.Join("*", "*", tok)); len(matches) == 0 {
				if matches, _ := filepath.Glob(filepath.Join("*", tok)); len(matches) == 0 {
					stale = append(stale, tok)
				}
			}
			continue
		}
		if !goName.MatchString(tok) {
			continue
		}
		name := strings.TrimSuffix(tok, "()")
		parts := strings.Split(name, ".")
		switch {
		case len(parts) > 1 && d.packages[parts[0]] && d.byPkg[parts[0]] != nil:
			member := strings.Join(parts[1:], ".")
			if !d.byPkg[parts[0]][member] && !(len(parts) == 2 && d.anywhere[parts[1]]) {
				stale = append(stale, tok)
			}
		case len(parts) > 1 && parts[0][0] >= 'A' && parts[0][0] <= 'Z' && d.anywhere[parts[0]]: // Type.Member
			if !d.anywhere[name] {
				stale = append(stale, tok)
			}
		case len(parts) == 1 && name[0] >= 'A' && name[0] <= 'Z' && strings.ToUpper(name) != name:
			if !d.anywhere[name] {
				stale = append(stale, tok)
			}
		}
	}
	require.Empty(t, stale, "ARCHITECTURE.md names what the code does not declare")
}
