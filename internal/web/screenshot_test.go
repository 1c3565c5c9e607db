package web_test

import (
	"os"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/apitest"
	"github.com/loopze/certstore/internal/material/materialtest"
)

// EnvScreenshot names the PNG file TestScreenshotForDocs writes. The README's picture is
// made with:
//
//	LOOPZE_UI_SCREENSHOT=$PWD/docs/ui-certificates.png go test -run TestScreenshotForDocs ./internal/web
const EnvScreenshot = "LOOPZE_UI_SCREENSHOT"

// TestScreenshotForDocs photographs the Certificates list at 1280x800 with a few typical
// entries: one referenced by deployed nodes, one expiring soon, one expired.
func TestScreenshotForDocs(t *testing.T) {
	out := os.Getenv(EnvScreenshot)
	if out == "" {
		t.Skip("set " + EnvScreenshot + " to the PNG file to write")
	}
	env := apitest.New(t)
	admin := env.Token(t, "default", "admin")
	now := time.Now()
	day := 24 * time.Hour

	root := materialtest.NewCA(t, materialtest.Options{CommonName: "Acme Internal Root CA", NotBefore: now.Add(-300 * day), NotAfter: now.Add(3350 * day)})
	edge := root.Issue(t, materialtest.Options{CommonName: "edge-gw-01.plant.acme.internal", NotBefore: now.Add(-20 * day), NotAfter: now.Add(345 * day)})
	broker := root.Issue(t, materialtest.Options{CommonName: "mqtt.plant.acme.internal", DNSNames: []string{"mqtt.plant.acme.internal"},
		NotBefore: now.Add(-353 * day), NotAfter: now.Add(12*day + time.Hour)})
	partner := materialtest.NewCA(t, materialtest.Options{CommonName: "Partner Logistics CA", NotBefore: now.Add(-800 * day), NotAfter: now.Add(-35 * day)})

	create(t, env, admin, map[string]any{"id": "internal-root-ca", "name": "Internal Root CA", "type": "ca-bundle", "source": "inline",
		"certPem": string(root.CertPEM()), "notes": "Trust anchor for every plant service"})
	create(t, env, admin, map[string]any{"id": "edge-client-2026", "name": "Edge gateway client", "type": "client-pair", "source": "inline",
		"certPem": string(edge.ChainPEM()), "keyPem": string(edge.KeyPEM()), "notes": "mTLS to the cloud ingest API"})
	create(t, env, admin, map[string]any{"id": "mqtt-broker", "name": "MQTT broker server cert", "type": "server-pair", "source": "inline",
		"certPem": string(broker.ChainPEM()), "keyPem": string(broker.KeyPEM()), "notes": "Renewal ticket OPS-412 open"})
	create(t, env, admin, map[string]any{"id": "partner-logistics-ca", "name": "Partner logistics CA", "type": "ca-bundle", "source": "inline",
		"certPem": string(partner.CertPEM()), "notes": "Partner rotated; replace before re-enabling the SFTP flow"})
	deploy(t, env, admin,
		ref{"ingest-line-1", "tcp-out-3", "tcp-out", "tls.caBundleRef", "internal-root-ca"},
		ref{"ingest-line-2", "mqtt-in-1", "mqtt-broker", "tls.caBundleRef", "internal-root-ca"},
		ref{"cloud-sync", "http-request-7", "http-request", "tls.caBundleRef", "internal-root-ca"},
		ref{"cloud-sync", "http-request-7", "http-request", "tls.clientCertRef", "edge-client-2026"})

	b := newBrowser(t, 1280, 800)
	b.signIn(t, env.URL, env.Token(t, "default", "editor"))
	require.True(t, run(t, b, "table fits", chromedp.Evaluate[bool](
		`(w => w.scrollWidth <= w.clientWidth)(document.querySelector('.table-wrap'))`)), "the list fits 1280 pixels without scrolling")
	png := run(t, b, "screenshot", chromedp.CaptureScreenshot())
	require.NoError(t, os.WriteFile(out, png, 0o644))
	require.Empty(t, b.problems())
}
