// Package tenantkeytest gives tests the tenant keys a server has: a master keyring and the
// tenant keys under it, over a test's database. The master key of a data directory lives in
// its loopze.key, as by default, or, when LOOPZE_TEST_MASTER_KEY_URI names a PKCS#11 token
// (CI runs the catalogue, export, rotation and runtime tests so, against SoftHSM2), in a key
// object of that token made for the directory: each directory its own object, so tests
// that rotate their master key do not rotate another test's.
package tenantkeytest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/masterkey"
	"github.com/loopze/certstore/internal/tenantkey"
)

// EnvMasterKeyURI names the PKCS#11 token tests keep their master keys in: a pkcs11: URI
// whose object is replaced by one made for each data directory.
const EnvMasterKeyURI = "LOOPZE_TEST_MASTER_KEY_URI"

// uriFile, in a data directory, holds the URI of the directory's master key in the token.
const uriFile = "master-key.uri"

// InToken reports whether tests keep their master keys in a token.
func InToken() bool { return os.Getenv(EnvMasterKeyURI) != "" }

// URI is the master key URI of dir, as LOOPZE_MASTER_KEY_URI would say it: "" (loopze.key
// in dir) unless tests keep their keys in a token, and then the key object made for dir,
// made now when dir has none yet.
func URI(t testing.TB, dir string) string {
	t.Helper()
	if !InToken() {
		return ""
	}
	if uri := URIOf(dir); uri != "" {
		return uri
	}
	base := os.Getenv(EnvMasterKeyURI)
	u, err := masterkey.ParsePKCS11URI(base)
	require.NoError(t, err, EnvMasterKeyURI)
	pin := u.PINValue.Reveal()
	if u.PINSource != "" {
		b, err := os.ReadFile(u.PINSource)
		require.NoError(t, err)
		pin, _, _ = strings.Cut(string(b), "\n")
	}
	label := make([]byte, 8)
	_, err = rand.Read(label)
	require.NoError(t, err)
	object := "test-" + hex.EncodeToString(label)
	args := []string{"--module", u.ModulePath, "--login", "--pin", pin,
		"--keygen", "--key-type", "AES:32", "--label", object, "--id", "01", "--sensitive", "--private"}
	if u.Token != "" {
		args = append(args, "--token-label", u.Token)
	}
	// A file-backed token that another test's process is rewriting reads as absent for a
	// moment: try again a few times. The tests of one process make their objects one at a
	// time (SoftHSM2 rewrites the token's files for each).
	var out []byte
	keygen.Lock()
	for range 20 {
		if out, err = exec.Command("pkcs11-tool", args...).CombinedOutput(); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	keygen.Unlock()
	require.NoError(t, err, "pkcs11-tool --keygen: %s", out)
	uri := objectAttr.ReplaceAllString(base, "${1}object="+object)
	require.NoError(t, os.MkdirAll(dir, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(dir, uriFile), []byte(uri+"\n"), 0o600))
	return uri
}

// keygen serialises the object creations of one test process.
var keygen sync.Mutex

var objectAttr = regexp.MustCompile(`([:;])object=[^;?]*`)

// URIOf is the master key URI a test gave dir ("" for loopze.key in dir), for helper
// processes that open dir's keys on their own.
func URIOf(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, uriFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// New opens dir's master keyring and returns the tenant keys under it over pool, as a
// server started on dir does: loopze.key in dir (made on first use) or the token's object
// of dir (made on first use). The keyring closes with the test.
func New(t testing.TB, pool *pgxpool.Pool, dir string) *tenantkey.Keys {
	t.Helper()
	master, err := Open(URI(t, dir), dir, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(func() { _ = master.Close() })
	return &tenantkey.Keys{Pool: pool, Master: master, Logger: slog.New(slog.DiscardHandler)}
}

// Open opens the master keyring uri names for dir (masterkey.Open), trying again for up
// to two seconds when uri is a token: a file-backed token whose files another process is
// rewriting (pkcs11-tool making another test's object, a helper killed while it wrote)
// can read as uninitialised, or without an object just made, for a moment.
func Open(uri, dir string, logger *slog.Logger) (masterkey.Keyring, error) {
	master, err := masterkey.Open(uri, dir, os.Getenv, logger)
	for i := 0; err != nil && uri != "" && i < 40; i++ {
		time.Sleep(50 * time.Millisecond)
		master, err = masterkey.Open(uri, dir, os.Getenv, logger)
	}
	return master, err
}

// Share gives dir the master key of from, as an operator copies loopze.key to another
// replica's data directory (or points it at the same token object).
func Share(t testing.TB, from, dir string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(dir, 0o700))
	for _, name := range []string{uriFile, envelope.KeyFile} {
		b, err := os.ReadFile(filepath.Join(from, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), b, 0o600), fmt.Sprintf("copy %s", name))
	}
}

// Source is where dir's master key lives, as doctor is told (Doctor.MasterKey).
func Source(t testing.TB, dir string) masterkey.Source {
	t.Helper()
	src, err := masterkey.Locate(URIOf(dir), dir, func(string) string { return "" })
	require.NoError(t, err)
	return src
}
