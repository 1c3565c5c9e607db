//go:build cgo

package masterkey_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// The tests' SoftHSM2 keeps its tokens in a directory of their own. SoftHSM reads
// SOFTHSM2_CONF from the process environment when the module is initialised, so it is set
// once for the test binary, before any test loads the module.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "masterkey-softhsm-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "softhsm directory:", err)
		os.Exit(1)
	}
	tokens := filepath.Join(dir, "tokens")
	conf := filepath.Join(dir, "softhsm2.conf")
	err = os.Mkdir(tokens, 0o700)
	if err == nil {
		err = os.WriteFile(conf, []byte("directories.tokendir = "+tokens+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "softhsm configuration:", err)
		os.Exit(1)
	}
	os.Setenv("SOFTHSM2_CONF", conf)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// moduleCandidates are where Debian and others install SoftHSM2's PKCS#11 module.
var moduleCandidates = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
}

const (
	userPIN = "1234"
	soPIN   = "5678"
)

// hsm is SoftHSM2 with the tools an operator uses on it.
type hsm struct{ module string }

// softHSM skips the test when SoftHSM2 or OpenSC's pkcs11-tool is missing, and fails it
// instead under LOOPZE_REQUIRE_HSM=1 (CI installs both).
func softHSM(t *testing.T) hsm {
	t.Helper()
	var h hsm
	var missing []string
	for _, p := range moduleCandidates {
		if _, err := os.Stat(p); err == nil {
			h.module = p
			break
		}
	}
	if h.module == "" {
		missing = append(missing, "libsofthsm2.so")
	}
	for _, tool := range []string{"softhsm2-util", "pkcs11-tool"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		if os.Getenv("LOOPZE_REQUIRE_HSM") == "1" {
			t.Fatalf("LOOPZE_REQUIRE_HSM=1 but %s missing: apt-get install softhsm2 opensc", strings.Join(missing, ", "))
		}
		t.Skipf("SoftHSM2 not installed (%s missing): apt-get install softhsm2 opensc", strings.Join(missing, ", "))
	}
	return h
}

var tokenCount atomic.Int64

// newToken initialises a fresh token with the user PIN 1234 and returns its label. Tokens
// made while a ring holds the module open are seen once it is initialised again, so tests
// make their tokens first.
func (h hsm) newToken(t *testing.T) string {
	t.Helper()
	label := fmt.Sprintf("loopze-%d", tokenCount.Add(1))
	h.run(t, "softhsm2-util", "--init-token", "--free", "--label", label, "--pin", userPIN, "--so-pin", soPIN)
	return label
}

// keygen creates an AES-256 key in the token as docs/operations.md tells an operator to.
func (h hsm) keygen(t *testing.T, token, object, id string) {
	t.Helper()
	h.tool(t, token, "--keygen", "--key-type", "AES:32", "--label", object, "--id", id, "--sensitive", "--private")
}

// importKey writes known key bytes into the token, so a test can compare with a file key.
func (h hsm) importKey(t *testing.T, token, object, id string, key []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "key.bin")
	if err := os.WriteFile(path, key, 0o600); err != nil {
		t.Fatal(err)
	}
	h.tool(t, token, "--write-object", path, "--type", "secrkey", "--key-type", "AES:32",
		"--label", object, "--id", id, "--sensitive", "--private")
}

// listKeys is pkcs11-tool's listing of the token's secret keys.
func (h hsm) listKeys(t *testing.T, token string) string {
	t.Helper()
	return h.tool(t, token, "--list-objects", "--type", "secrkey")
}

func (h hsm) tool(t *testing.T, token string, args ...string) string {
	t.Helper()
	base := []string{"--module", h.module, "--token-label", token, "--login", "--pin", userPIN}
	return h.run(t, "pkcs11-tool", append(base, args...)...)
}

func (h hsm) run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// uri is the PKCS#11 URI of object in token, with the PIN given as pin-value.
func (h hsm) uri(token, object string) string {
	return "pkcs11:token=" + token + ";object=" + object + "?module-path=" + h.module + "&pin-value=" + userPIN
}

// uriPINFile is the PKCS#11 URI of object in token, with the PIN in a 0600 file.
func (h hsm) uriPINFile(t *testing.T, token, object, pin string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(path, []byte(pin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return "pkcs11:token=" + token + ";object=" + object + "?module-path=" + h.module + "&pin-source=file:" + path
}
