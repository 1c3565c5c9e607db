package api_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/apitest"
	"github.com/loopze/certstore/internal/material/materialtest"
)

// filePair is a file-sourced client-pair entry.
func filePair(id, cert, key string) map[string]any {
	return map[string]any{"id": id, "name": id, "type": "client-pair", "source": "file", "certPath": cert, "keyPath": key}
}

// validationErrors reads the errors of a 422 or of a validate answer as location: message.
func validationErrors(t *testing.T, res *apitest.Response) map[string]string {
	t.Helper()
	var body struct {
		Errors []struct{ Location, Message string } `json:"errors"`
	}
	res.Decode(t, &body)
	out := map[string]string{}
	for _, e := range body.Errors {
		out[e.Location] = e.Message
	}
	return out
}

// TestOtherTenantsNeedFileRoots replays the attack: with LOOPZE_FILE_ROOTS unset, an editor
// of tenant acme created a client-pair from tenant globex's key files. Now every way a
// tenant other than the default names a file (a file entry by POST or PUT, validate, a
// direct *File path in a deploy) is a 422 saying how to enable it, while the default
// tenant keeps any absolute path, as the operator documentation promises.
func TestOtherTenantsNeedFileRoots(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	c := materialtest.NewCA(t, materialtest.Options{}).Issue(t, materialtest.Options{CommonName: "globex-edge"})
	globex := t.TempDir()
	cert := apitest.WriteFile(t, globex, "edge.crt", c.ChainPEM())
	key := apitest.WriteFile(t, globex, "edge.key", c.KeyPEM())
	acme := env.Token(t, "acme", "editor")

	requireRefusal := func(t *testing.T, res *apitest.Response, fields ...string) {
		t.Helper()
		require.Equal(t, http.StatusUnprocessableEntity, res.Status, "%s", res.Body)
		errs := validationErrors(t, res)
		for _, f := range fields {
			require.Contains(t, errs, f, "%s", res.Body)
			require.Contains(t, errs[f], "LOOPZE_FILE_ROOTS")
			require.Contains(t, errs[f], "/etc/loopze/certs/{tenant}")
		}
		require.NotContains(t, string(res.Body), "hasPrivateKey")
		require.NotContains(t, string(res.Body), "globex-edge", "nothing of the file is read")
	}
	res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: acme, Body: filePair("stolen", cert, key)})
	requireRefusal(t, res, "body.certPath", "body.keyPath")
	res = env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/stolen", Token: acme, Body: filePair("stolen", cert, key)})
	requireRefusal(t, res, "body.certPath", "body.keyPath")
	require.Equal(t, http.StatusNotFound, env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/certs/stolen", Token: acme}).Status)

	res = env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs/validate", Token: acme, Body: filePair("stolen", cert, key)})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Contains(t, validationErrors(t, res)["body.keyPath"], "LOOPZE_FILE_ROOTS")
	require.NotContains(t, string(res.Body), "globex-edge")

	ws := workspaceOf(flow("line-1", node("tcp-1", "tcp-out", obj{"tls": obj{"clientCertFile": cert, "clientKeyFile": key}})))
	res = deploy(t, env, acme, ws)
	requireRefusal(t, res)
	require.Contains(t, string(res.Body), "tls.clientCertFile")
	require.Contains(t, string(res.Body), "LOOPZE_FILE_ROOTS")

	// The default tenant is the single-tenant installation: any absolute path, as before.
	def := env.Token(t, "default", "editor")
	res = env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: def, Body: filePair("edge", cert, key)})
	require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)
	require.Equal(t, true, res.JSON(t)["hasPrivateKey"])
	require.Equal(t, http.StatusOK, deploy(t, env, def, ws).Status)
	_, err := env.Workspace.NodeTLSConfig(t.Context(), "default", "line-1", "tcp-1")
	require.NoError(t, err)

	// With roots, acme reads its own directory and nothing else.
	base := t.TempDir()
	rooted := apitest.New(t, apitest.Options{FileRoots: filepath.Join(base, "{tenant}")})
	own := apitest.WriteFile(t, base, "acme/edge.crt", c.ChainPEM())
	ownKey := apitest.WriteFile(t, base, "acme/edge.key", c.KeyPEM())
	acme = rooted.Token(t, "acme", "editor")
	res = rooted.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: acme, Body: filePair("edge", own, ownKey)})
	require.Equal(t, http.StatusCreated, res.Status, "%s", res.Body)
	res = rooted.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs", Token: acme, Body: filePair("stolen", cert, key)})
	require.Equal(t, http.StatusUnprocessableEntity, res.Status, "%s", res.Body)
	require.Contains(t, validationErrors(t, res)["body.keyPath"], "outside the allowed file roots")
}

// TestValidateIsNoFileSystemOracle: validate answered "no PEM block found" for
// /etc/shadow, and told directories, sizes and missing files apart. For a path outside the
// roots (and, without roots, for any path of a tenant other than the default) every one of
// them now gets the same answer; a symlink in a root that leads out is refused without
// naming where it leads; and no message repeats a PEM label read from a file.
func TestValidateIsNoFileSystemOracle(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	outside := t.TempDir()
	big := apitest.WriteFile(t, outside, "big.pem", []byte(strings.Repeat("A", 1<<20)))
	csr := apitest.WriteFile(t, outside, "req.pem", []byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"))
	probes := []string{"/etc/shadow", "/etc", "/root", filepath.Join(outside, "missing.pem"), big, csr, "/proc/self/environ",
		filepath.Join(base, "acme/../globex/key.pem")}

	for name, roots := range map[string]string{"roots unset": "", "roots set": filepath.Join(base, "{tenant}")} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			env := apitest.New(t, apitest.Options{FileRoots: roots})
			tok := env.Token(t, "acme", "editor")
			answers := map[string][]string{}
			for _, p := range probes {
				body := map[string]any{"id": "probe", "name": "probe", "type": "ca-bundle", "source": "file", "certPath": p}
				res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs/validate", Token: tok, Body: body})
				require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
				msg := validationErrors(t, res)["body.certPath"]
				require.NotEmpty(t, msg, "%s: %s", p, res.Body)
				key := strings.Replace(msg, p, "PATH", 1)
				answers[key] = append(answers[key], p)
			}
			require.Len(t, answers, 1, "every probe outside the roots answers alike: %v", answers)
		})
	}

	// Inside the roots, a symlink that leads out is refused without naming its target, and
	// with the answer a file missing from the root gets, whether the target exists or not:
	// a link to /etc/shadow and one to nothing read alike.
	env := apitest.New(t, apitest.Options{FileRoots: filepath.Join(base, "{tenant}")})
	tok := env.Token(t, "acme", "editor")
	require.NoError(t, os.MkdirAll(filepath.Join(base, "acme"), 0o700))
	inRoot := map[string][]string{}
	for i, target := range []string{csr, filepath.Join(outside, "gone.pem"), "/etc/shadow", "/etc", "/nonexistent/key.pem", ""} {
		link := filepath.Join(base, "acme", fmt.Sprintf("probe-%d.pem", i))
		if target != "" { // else a file missing from the root
			require.NoError(t, os.Symlink(target, link))
		}
		body := map[string]any{"id": "probe", "name": "probe", "type": "ca-bundle", "source": "file", "certPath": link}
		res := env.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs/validate", Token: tok, Body: body})
		require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
		msg := validationErrors(t, res)["body.certPath"]
		require.NotEmpty(t, msg)
		require.NotContains(t, string(res.Body), outside, "the symlink target outside the roots is not echoed")
		key := strings.Replace(msg, link, "PATH", 1)
		inRoot[key] = append(inRoot[key], target)
	}
	require.Len(t, inRoot, 1, "links out of the root and a missing file answer alike: %v", inRoot)

	// The default tenant may read any path, but the label of what it found is not repeated.
	free := apitest.New(t)
	def := free.Token(t, "default", "editor")
	body := map[string]any{"id": "probe", "name": "probe", "type": "ca-bundle", "source": "file", "certPath": csr}
	res := free.Do(t, apitest.Request{Method: http.MethodPost, Path: "/api/v1/certs/validate", Token: def, Body: body})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Contains(t, validationErrors(t, res)["body.certPath"], "is not a CERTIFICATE")
	require.NotContains(t, string(res.Body), "REQUEST")
}
