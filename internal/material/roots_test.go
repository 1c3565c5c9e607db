package material_test

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/material"
	mt "github.com/loopze/certstore/internal/material/materialtest"
)

func TestParseRoots(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want material.Roots
	}{
		{"", nil},
		{"::", nil},
		{"/etc/loopze", material.Roots{"/etc/loopze"}},
		{" /etc/loopze/ :: /srv/{tenant}/certs/../tls ", material.Roots{"/etc/loopze", "/srv/{tenant}/tls"}},
		{"relative/dir", material.Roots{"relative/dir"}},
	} {
		require.Equal(t, tc.want, material.ParseRoots(tc.in), tc.in)
	}
	require.NoError(t, material.ParseRoots("/a:/b/{tenant}").Validate())
	require.ErrorIs(t, material.ParseRoots("/a:b").Validate(), material.ErrRelativePath)
}

// symlink replaces (atomically, like certbot and the kubelet do) link with one to target.
func symlink(t *testing.T, target, link string) {
	t.Helper()
	tmp := link + ".tmp"
	require.NoError(t, os.Symlink(target, tmp))
	require.NoError(t, os.Rename(tmp, link))
}

func TestReadFileRefusals(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	content := []byte("-----BEGIN CERTIFICATE-----\nc2VjcmV0\n-----END CERTIFICATE-----\n")
	regular := mt.WriteFile(t, dir, "ok.pem", content)
	big := mt.WriteFile(t, dir, "big.pem", append(bytes.Repeat([]byte("A"), material.MaxSize), content...))
	exact := mt.WriteFile(t, dir, "exact.pem", bytes.Repeat([]byte("A"), material.MaxSize))
	dangling := filepath.Join(dir, "dangling.pem")
	require.NoError(t, os.Symlink(filepath.Join(dir, "gone.pem"), dangling))

	tests := []struct {
		name string
		path string
		want error
	}{
		{"relative", "certs/ok.pem", material.ErrRelativePath},
		{"dot relative", "./ok.pem", material.ErrRelativePath},
		{"missing", filepath.Join(dir, "missing.pem"), fs.ErrNotExist},
		{"dangling symlink", dangling, fs.ErrNotExist},
		{"directory", dir, material.ErrNotRegular},
		{"too large", big, material.ErrTooLarge},
		{"regular", regular, nil},
		{"exactly MaxSize", exact, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			data, err := material.Roots(nil).ReadFile(material.DefaultTenant, tc.path)
			if tc.want == nil {
				require.NoError(t, err)
				require.NotEmpty(t, data)
				return
			}
			require.ErrorIs(t, err, tc.want)
			require.Nil(t, data)
			require.Contains(t, err.Error(), tc.path, "the error names the path")
			require.NotContains(t, err.Error(), "BEGIN")
			require.NotContains(t, err.Error(), "c2VjcmV0")
		})
	}
}

func TestReadFileCertbotLiveLinks(t *testing.T) {
	t.Parallel()
	le := t.TempDir()
	mt.WriteFile(t, le, "archive/example.com/fullchain1.pem", []byte("one"))
	require.NoError(t, os.MkdirAll(filepath.Join(le, "live/example.com"), 0o700))
	live := filepath.Join(le, "live/example.com/fullchain.pem")
	symlink(t, "../../archive/example.com/fullchain1.pem", live)
	roots := material.Roots{le}

	data, err := roots.ReadFile("acme", live)
	require.NoError(t, err)
	require.Equal(t, "one", string(data))

	// Renewal writes fullchain2 and moves the live link; the next read sees it.
	mt.WriteFile(t, le, "archive/example.com/fullchain2.pem", []byte("two"))
	symlink(t, "../../archive/example.com/fullchain2.pem", live)
	data, err = roots.ReadFile("acme", live)
	require.NoError(t, err)
	require.Equal(t, "two", string(data))
}

func TestReadFileKubernetesDataSwap(t *testing.T) {
	t.Parallel()
	vol := t.TempDir()
	mt.WriteFile(t, vol, "..2026_01_01/tls.crt", []byte("old"))
	symlink(t, "..2026_01_01", filepath.Join(vol, "..data"))
	path := filepath.Join(vol, "tls.crt")
	require.NoError(t, os.Symlink("..data/tls.crt", path))
	roots := material.Roots{vol}

	data, err := roots.ReadFile("acme", path)
	require.NoError(t, err)
	require.Equal(t, "old", string(data))

	// The kubelet writes a new timestamped directory, swaps ..data, then removes the old one.
	mt.WriteFile(t, vol, "..2026_02_01/tls.crt", []byte("new"))
	symlink(t, "..2026_02_01", filepath.Join(vol, "..data"))
	require.NoError(t, os.RemoveAll(filepath.Join(vol, "..2026_01_01")))
	data, err = roots.ReadFile("acme", path)
	require.NoError(t, err)
	require.Equal(t, "new", string(data))
}

func TestReadFileRoots(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	acmeFile := mt.WriteFile(t, base, "tenants/acme/tls/ca.pem", []byte("acme"))
	otherFile := mt.WriteFile(t, base, "tenants/other/tls/ca.pem", []byte("other"))
	outside := mt.WriteFile(t, base, "elsewhere/ca.pem", []byte("outside"))
	prefixTrick := mt.WriteFile(t, base, "shared-evil/ca.pem", []byte("contents-of-file"))
	sharedFile := mt.WriteFile(t, base, "shared/ca.pem", []byte("shared"))
	escape := filepath.Join(base, "tenants/acme/tls/escape.pem")
	require.NoError(t, os.Symlink(outside, escape))
	inward := filepath.Join(base, "elsewhere/inward.pem")
	require.NoError(t, os.Symlink(acmeFile, inward))
	linkedRoot := filepath.Join(base, "linked")
	require.NoError(t, os.Symlink(filepath.Join(base, "shared"), linkedRoot))

	roots := material.ParseRoots(filepath.Join(base, "tenants/{tenant}/tls") + ":" + filepath.Join(base, "shared"))
	tests := []struct {
		name   string
		roots  material.Roots
		tenant string
		path   string
		want   error
	}{
		{"own tenant", roots, "acme", acmeFile, nil},
		{"shared root", roots, "acme", sharedFile, nil},
		{"another tenant's directory", roots, "acme", otherFile, material.ErrOutsideRoots},
		{"outside every root", roots, "acme", outside, material.ErrOutsideRoots},
		{"prefix is not a parent", roots, "acme", prefixTrick, material.ErrOutsideRoots},
		{"symlink escaping the root", roots, "acme", escape, material.ErrNotInRoots},
		{"symlink from outside into the root", roots, "acme", inward, material.ErrOutsideRoots},
		{"dot-dot in the path", roots, "acme", filepath.Join(base, "tenants/acme/tls/../../other/tls/ca.pem"), material.ErrOutsideRoots},
		{"tenant that climbs", roots, "../other", otherFile, material.ErrOutsideRoots},
		{"empty tenant", material.Roots{filepath.Join(base, "tenants/{tenant}")}, "", acmeFile, material.ErrOutsideRoots},
		{"root that is a symlink", material.Roots{linkedRoot}, "acme", filepath.Join(linkedRoot, "ca.pem"), nil},
		{"relative root admits nothing", material.Roots{"tenants"}, "acme", acmeFile, material.ErrOutsideRoots},
		{"no roots admit any absolute path to the default tenant", nil, material.DefaultTenant, outside, nil},
		{"no roots admit nothing to another tenant", nil, "acme", outside, material.ErrFileRootsRequired},
		{"no roots, another tenant, missing file", nil, "acme", filepath.Join(base, "nope.pem"), material.ErrFileRootsRequired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			data, err := tc.roots.ReadFile(tc.tenant, tc.path)
			if tc.want == nil {
				require.NoError(t, err)
				require.NotEmpty(t, data)
				return
			}
			require.ErrorIs(t, err, tc.want)
			require.Contains(t, err.Error(), tc.path)
			require.NotContains(t, err.Error(), "contents-of-file")
		})
	}
}

func TestLoadFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	root, _, leaf := mt.NewChain(t, mt.Options{})
	certPath := mt.WriteFile(t, dir, "edge.crt", leaf.ChainPEM())
	keyPath := mt.WriteFile(t, dir, "edge.key", leaf.KeyPEMAs(t, mt.SEC1))
	caPath := mt.WriteFile(t, dir, "ca.crt", root.CertPEM())
	missing := filepath.Join(dir, "missing.key")

	tests := []struct {
		name      string
		kind      material.Kind
		roots     material.Roots
		cert, key string
		fields    material.Fields
		want      []want
	}{
		{"client pair", material.ClientPair, nil, certPath, keyPath, material.PathFields, nil},
		{"ca bundle", material.CABundle, material.Roots{dir}, caPath, "", material.PathFields, nil},
		{"default field names", material.ClientPair, nil, certPath, "", material.Fields{},
			[]want{{"keyPath", "a private key path is required"}}},
		{"missing key file", material.ServerPair, nil, certPath, missing, material.PathFields,
			[]want{{"keyPath", missing}}},
		{"relative cert path", material.ServerPair, nil, "edge.crt", keyPath, material.PathFields,
			[]want{{"certPath", "path is not absolute"}}},
		{"key file given as cert", material.ClientPair, nil, keyPath, keyPath, material.PathFields,
			[]want{{"certPath", "is a private key, not a certificate: the key belongs in keyPath"}}},
		{"key path for a bundle", material.CABundle, nil, caPath, keyPath, material.PathFields,
			[]want{{"keyPath", "a ca-bundle carries no private key"}}},
		{"outside roots", material.CABundle, material.Roots{filepath.Join(dir, "sub")}, caPath, "", material.PathFields,
			[]want{{"certPath", "outside the allowed file roots"}}},
		{"directory as key", material.ClientPair, nil, certPath, dir,
			material.Fields{Cert: "tls.clientCertFile", Key: "tls.clientKeyFile"},
			[]want{{"tls.clientKeyFile", "not a regular file"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m, issues, err := tc.roots.LoadFiles(context.Background(), tc.kind, material.DefaultTenant, tc.cert, tc.key, tc.fields, time.Now(), nil)
			require.NoError(t, err)
			requireIssues(t, issues, tc.want)
			requireClean(t, issues, leaf.KeyPEM(), leaf.ChainPEM())
			if len(tc.want) == 0 {
				require.NotNil(t, m)
				require.Equal(t, tc.kind.IsPair(), m.Metadata.HasPrivateKey)
			} else {
				require.Nil(t, m)
			}
		})
	}
}

// TestReadFileOutsideRootsIsNoOracle proves the roots are checked on the cleaned path before
// the file system is: whether a path outside the roots exists, is a directory, is a file or
// is unreadable, the answer is the same, and a symlink leading out of a root is refused
// without naming where it leads.
func TestReadFileOutsideRootsIsNoOracle(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	root := filepath.Join(base, "tenants/acme")
	require.NoError(t, os.MkdirAll(root, 0o700))
	secretDir := filepath.Join(base, "secret-place")
	secretFile := mt.WriteFile(t, secretDir, "key.pem", []byte("-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n"))
	unreadable := mt.WriteFile(t, secretDir, "locked.pem", []byte("x"))
	require.NoError(t, os.Chmod(unreadable, 0))
	roots := material.Roots{filepath.Join(base, "tenants/{tenant}")}

	for name, roots := range map[string]material.Roots{"roots set": roots, "roots unset": nil} {
		answers := map[string]bool{}
		for _, p := range []string{secretFile, secretDir, unreadable, filepath.Join(secretDir, "missing.pem"),
			filepath.Join(base, "no-such-dir/x.pem"), "/etc/shadow", "/", filepath.Join(root, "../../secret-place/key.pem")} {
			_, err := roots.ReadFile("acme", p)
			require.ErrorIs(t, err, material.ErrOutsideRoots, "%s: %s", name, p)
			answers[strings.Replace(err.Error(), p, "PATH", 1)] = true
		}
		require.Len(t, answers, 1, "%s: one answer for every path outside: %v", name, answers)
	}

	// Symlinks planted inside the root: the target is never named, and whether it exists
	// outside the roots makes no difference to the answer, which is the one a file missing
	// inside the root gets.
	answers := map[string][]string{}
	for target, link := range map[string]string{secretFile: "out.pem", filepath.Join(secretDir, "gone.pem"): "dangling.pem",
		filepath.Join(secretDir, "gone/deeper.pem"): "deep.pem", "/etc/shadow": "shadow.pem", secretDir: "dir.pem",
		"../../secret-place/key.pem": "climb.pem", filepath.Join(root, "missing.pem"): "missing-inside.pem"} {
		p := filepath.Join(root, link)
		require.NoError(t, os.Symlink(target, p))
		_, err := roots.ReadFile("acme", p)
		require.Error(t, err)
		require.NotContains(t, err.Error(), "secret-place", "the symlink target outside the roots is not echoed")
		require.NotContains(t, err.Error(), "BEGIN")
		key := strings.Replace(err.Error(), p, "PATH", 1)
		answers[key] = append(answers[key], link)
	}
	p := filepath.Join(root, "absent.pem")
	_, err := roots.ReadFile("acme", p)
	require.ErrorIs(t, err, fs.ErrNotExist)
	key := strings.Replace(err.Error(), p, "PATH", 1)
	answers[key] = append(answers[key], "absent.pem")
	require.Len(t, answers, 1, "one answer whether a link leads out to a file, to nothing, or the file is missing: %v", answers)
}
