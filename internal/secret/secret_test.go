package secret_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/secret"
)

func TestNoVerbPrintsASecret(t *testing.T) {
	t.Parallel()
	values := []any{secret.Bytes("s3cr3t-bytes"), secret.PEM("-----BEGIN PRIVATE KEY-----s3cr3t"), secret.String("s3cr3t-string")}
	for _, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
			out := fmt.Sprintf(verb, v)
			require.NotContains(t, out, "s3cr3t", verb)
			require.NotContains(t, strings.ToLower(out), "733363", verb) // hex of "s3c"
		}
		out := fmt.Sprintf("%v", struct{ V any }{v})
		require.NotContains(t, out, "s3cr3t")
		b, err := json.Marshal(map[string]any{"v": v})
		require.NoError(t, err)
		require.NotContains(t, string(b), "s3cr3t")
	}
	require.Equal(t, "s3cr3t-string", secret.String("s3cr3t-string").Reveal())
}
