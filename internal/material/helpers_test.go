package material_test

import (
	"encoding/base64"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/material"
)

// requireClean fails when any issue message carries PEM armour or a run of the base64 body
// of any of the given PEM inputs.
func requireClean(t *testing.T, issues []material.Issue, secrets ...[]byte) {
	t.Helper()
	var chunks []string
	for _, s := range secrets {
		rest := s
		for {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			enc := base64.StdEncoding.EncodeToString(b.Bytes)
			for off := 0; off+16 <= len(enc); off += 16 {
				chunks = append(chunks, enc[off:off+16])
			}
		}
	}
	for _, is := range issues {
		require.NotContains(t, is.Message, "-----BEGIN", "issue %q quotes PEM", is)
		require.NotContains(t, is.Message, "-----END", "issue %q quotes PEM", is)
		for _, c := range chunks {
			require.False(t, strings.Contains(is.Message, c), "issue %q quotes material bytes", is)
		}
	}
}

// want is an expected issue: its field and a fragment of its message.
type want struct {
	field, contains string
}

// requireIssues checks that issues are exactly the wanted ones, in any order.
func requireIssues(t *testing.T, issues []material.Issue, wants []want) {
	t.Helper()
	require.Len(t, issues, len(wants), "issues: %v", issues)
	used := make([]bool, len(issues))
next:
	for _, w := range wants {
		for i, is := range issues {
			if !used[i] && is.Field == w.field && strings.Contains(is.Message, w.contains) {
				used[i] = true
				continue next
			}
		}
		require.Failf(t, "missing issue", "want %s: …%s… in %v", w.field, w.contains, issues)
	}
}
