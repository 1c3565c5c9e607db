package web_test

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/apitest"
	"github.com/loopze/certstore/internal/auth"
	"github.com/loopze/certstore/internal/material/materialtest"
)

// page fetches a UI page with the session cookie, without following redirects.
func page(t *testing.T, env *apitest.Env, token, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, env.URL+path, nil)
	require.NoError(t, err)
	req.AddCookie(&http.Cookie{Name: auth.CookieName, Value: token})
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := c.Do(req)
	require.NoError(t, err)
	return res.StatusCode, readBody(t, res)
}

// rowIDs lists the entry IDs of a rendered list, in page order.
func rowIDs(body string) []string {
	var ids []string
	for _, m := range regexp.MustCompile(`<tr data-id="([^"]+)"`).FindAllStringSubmatch(body, -1) {
		ids = append(ids, m[1])
	}
	return ids
}

// TestListPage checks what the server renders: every column, expiry badges, filters,
// order by ID, roles, and never a byte of PEM or key, on the list and the edit form.
func TestListPage(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	admin := env.Token(t, "default", "admin")
	viewer := env.Token(t, "default", "viewer")
	now := time.Now()

	pairCert, pairKey := materialtest.Pair(t, materialtest.Options{CommonName: "edge.example", DNSNames: []string{"edge.example"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(400 * 24 * time.Hour)})
	soon := materialtest.NewCA(t, materialtest.Options{CommonName: "Soon CA", NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10*24*time.Hour + time.Hour)})
	old := materialtest.NewCA(t, materialtest.Options{CommonName: "Old CA", NotBefore: now.Add(-400 * 24 * time.Hour), NotAfter: now.Add(-24 * time.Hour)})
	create(t, env, admin, map[string]any{"id": "zz-edge", "name": "Edge client", "type": "client-pair", "source": "inline",
		"certPem": string(pairCert), "keyPem": string(pairKey), "notes": "owned by <ops> & co"})
	create(t, env, admin, map[string]any{"id": "bb-soon", "name": "Soon", "type": "ca-bundle", "source": "inline", "certPem": string(soon.CertPEM())})
	create(t, env, admin, map[string]any{"id": "aa-old", "name": "Old", "type": "ca-bundle", "source": "inline", "certPem": string(old.CertPEM())})
	deploy(t, env, admin, ref{"f1", "n1", "tcp-out", "tls.caBundleRef", "bb-soon"})

	status, body := page(t, env, admin, "/certs")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, []string{"aa-old", "bb-soon", "zz-edge"}, rowIDs(body), "sorted by ID")
	for _, h := range []string{"ID", "Name", "Type", "Source", "Fingerprint</abbr", "Subject", "Issuer", "Expires", "Notes", "Refs"} {
		require.Contains(t, body, ">"+h, "column %s", h)
	}
	require.Regexp(t, `(?s)data-id="aa-old".*?badge bad">expired<`, body)
	require.Regexp(t, `(?s)data-id="bb-soon".*?badge warn">10 days left<.*?class="num refs">1<`, body)
	require.NotRegexp(t, `(?s)data-id="zz-edge".*?badge`, body, "a year away is no news")
	fp := fingerprint(t, pairCert)
	require.Contains(t, body, `title="`+fp+`"`, "full fingerprint on hover")
	require.Contains(t, body, `data-copy="`+fp+`"`)
	require.Contains(t, body, ">"+fp[:8]+"…"+fp[len(fp)-8:]+"<", "shortened in the cell")
	require.Contains(t, body, "owned by &lt;ops&gt; &amp; co", "notes are escaped")
	require.Contains(t, body, `id="new-cert"`)
	require.Contains(t, body, `href="/certs/zz-edge/edit"`)

	// No material, in any encoding a careless template might use.
	for _, pemText := range [][]byte{pairCert, pairKey} {
		inner := strings.Join(strings.Split(string(pemText), "\n")[1:3], "")
		require.NotContains(t, body, inner)
	}
	require.NotContains(t, body, "BEGIN")
	status, edit := page(t, env, admin, "/certs/zz-edge/edit")
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, edit, `value="Edge client"`)
	require.Contains(t, edit, `title="`+fp+`">`+fp+`</code>, expires `+leaf(t, pairCert).NotAfter.UTC().Format("2006-01-02")+`)`,
		"the stored material's fingerprint and expiry")
	require.NotContains(t, edit, "BEGIN CERTIFICATE-----\n")
	require.NotContains(t, edit, strings.Split(string(pairKey), "\n")[1])
	require.NotContains(t, edit, base64.StdEncoding.EncodeToString(pairKey)[:40])

	// Filters: by type, by text (the API's search), both kept in the form.
	_, body = page(t, env, admin, "/certs?type=ca-bundle")
	require.Equal(t, []string{"aa-old", "bb-soon"}, rowIDs(body))
	require.Contains(t, body, `<option value="ca-bundle" selected>`)
	_, body = page(t, env, admin, "/certs?q=EDGE")
	require.Equal(t, []string{"zz-edge"}, rowIDs(body))
	require.Contains(t, body, `value="EDGE"`)
	_, body = page(t, env, admin, "/certs?q=nothing-like-this")
	require.Empty(t, rowIDs(body))
	require.Contains(t, body, "No entries match the filter.")

	// Viewers read the same list with nothing to change it.
	status, body = page(t, env, viewer, "/certs")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, []string{"aa-old", "bb-soon", "zz-edge"}, rowIDs(body))
	require.NotContains(t, body, `id="new-cert"`)
	require.NotContains(t, body, "/edit")
	require.NotContains(t, body, "/delete")
	for _, p := range []string{"/certs/new", "/certs/zz-edge/edit", "/certs/zz-edge/delete"} {
		status, _ := page(t, env, viewer, p)
		require.Equal(t, http.StatusForbidden, status, p)
	}

	// Another tenant sees none of it.
	_, body = page(t, env, env.Token(t, "other", "admin"), "/certs")
	require.Empty(t, rowIDs(body))
	status, _ = page(t, env, env.Token(t, "other", "admin"), "/certs/zz-edge/edit")
	require.Equal(t, http.StatusNotFound, status)
}

// TestDeletePage renders the entry's metadata, the references of a referenced entry and no
// delete button; the entry's history page shows its current fingerprint.
func TestDeletePage(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	admin := env.Token(t, "default", "admin")
	ca := materialtest.NewCA(t, materialtest.Options{})
	create(t, env, admin, map[string]any{"id": "root", "name": "Root", "type": "ca-bundle", "source": "inline", "certPem": string(ca.CertPEM())})
	create(t, env, admin, map[string]any{"id": "spare", "name": "Spare", "type": "ca-bundle", "source": "inline", "certPem": string(ca.CertPEM())})
	deploy(t, env, admin, ref{"ingest-line-1", "tcp-out-3", "tcp-out", "tls.caBundleRef", "root"})

	_, body := page(t, env, admin, "/certs/root/delete")
	require.Contains(t, body, `<code class="fp-inline">`+fingerprint(t, ca.CertPEM())+`</code>`)
	require.Contains(t, body, `<dt>Subject</dt><dd>`+ca.Cert.Subject.String()+`</dd>`)
	require.Contains(t, body, `<dt>Expires</dt><dd>`+ca.Cert.NotAfter.UTC().Format("2006-01-02 15:04 UTC")+`</dd>`)
	require.Contains(t, body, `id="blocked"`)
	require.Contains(t, body, "<code>ingest-line-1</code>")
	require.Contains(t, body, "<code>tcp-out-3</code>")
	require.Contains(t, body, "<code>tls.caBundleRef</code>")
	require.NotContains(t, body, `id="delete"`)

	_, body = page(t, env, admin, "/certs/spare/delete")
	require.Contains(t, body, `id="unreferenced"`)
	require.Contains(t, body, `id="delete"`)

	status, _ := page(t, env, admin, "/certs/Not_A_Slug!/delete")
	require.Equal(t, http.StatusNotFound, status)

	status, body = page(t, env, admin, "/certs/root/history")
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, body, `id="current-fingerprint">`+fingerprint(t, ca.CertPEM())+`</code>`)
}

// leaf parses the first certificate of certPEM.
func leaf(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	require.NotNil(t, block, "no PEM block")
	c, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	return c
}
